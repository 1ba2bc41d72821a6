"""fbmr.core: what training, export, serving and the client must share, in numpy and Pillow only.

Labels, listing-field cleaning, image preprocessing and the tokeniser live here so that every side
turns the same photo and the same text into byte-identical model inputs.
"""
