"""The models: one file each, what two share (blocks, GAN losses, augmentation), the model
contract (base.py) and the registry of names. Imports only imagegen.common."""
