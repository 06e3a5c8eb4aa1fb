"""The core: one denoising loop (`sampling`) over one adapter (`denoiser`, `backbones`), the prediction
conversions (`prediction`), the hook points (`hooks`) and tiled evaluation of large canvases (`tiling`).

Everything else in gen builds on this layer, and nothing here imports from above it.
"""
