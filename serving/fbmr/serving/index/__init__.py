"""The similar-listing index: FAISS and Milvus engines behind one live-index interface
(`faiss_index`, `milvus_index`), its versions on disk and their reload (`store`), the update
log of listings put and deleted while serving (`updates`), the filters applied inside a search,
and `fbmr index build`'s catalogue job (`catalogue`). No web framework and no Triton control."""
