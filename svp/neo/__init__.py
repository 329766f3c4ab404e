"""NEO, the native (encoder-free) VLM: model, builder from Qwen3, ms-swift model type and
template (upstream: EvolvingLMMs-Lab/NEO, VLMTrainKit/neo)."""
