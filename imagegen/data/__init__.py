"""Training and reference images: datasets and their sources, decoding image files, labels,
the sizes of a folder's images, the batch order. Imports only imagegen.common."""
