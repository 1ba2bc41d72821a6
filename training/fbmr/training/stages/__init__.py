"""The training stages, in data order: word2vec, image, text, fusion. Each reads the prepared
dataset and what the stages before it wrote into the run directory:

    RUN/
      config.json, label_map.json
      word2vec/   vectors.kv (gensim KeyedVectors), tokenizer.json, tsne.png, summary.json
      image/      best.pt, last.pt, history.json, metrics.json, curves.png, confusion.png,
                  features/ (cached mode: trunk features per split)
      text/       best.pt, last.pt, history.json, metrics.json, curves.png, confusion.png
      fusion/     best.pt, last.pt, history.json, metrics.json, curves.png, confusion.png
"""
