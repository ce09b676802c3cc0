"""Images from a model: latents, generation in batches, PNG grids and animations, and the
`sample` command's options and work."""
