"""The similar-listing index: FAISS and Milvus engines behind one live-index interface
(`faiss_index`, `milvus_index`), its versions on disk and their reload (`store`), the update
log of listings put and deleted while serving (`updates`, in generations: `log_generations`),
the filters applied inside a search, `fbmr index build`'s catalogue job (`catalogue`), and the
housekeeping after a new version (`retention`, and `fbmr index compact`: `compaction`). No web
framework and no Triton control."""
