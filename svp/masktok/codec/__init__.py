"""Mask codecs: region masks <-> two discrete codes (SAMTok), behind one interface.

``load_codec("builtin:PATH")`` loads our own small SAM-style tokenizer trained by
``data_tools/train_mask_codec.py``; ``samtok:DIR`` (the released SAMTok weights, via ``sam2``).
"""

from svp.masktok.codec.base import MaskCodec, codec_fingerprint, load_codec, masks_to_boxes

__all__ = ["MaskCodec", "codec_fingerprint", "load_codec", "masks_to_boxes"]
