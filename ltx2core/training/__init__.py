"""LoRA training of the LTX-2 transformer, as plain functions the train task composes.

  flow_matching  sigma sampling (the validation sampler's dynamic shift) and the rectified-flow target
  lora           LoRA targets, adding the adapter, the diffusers and ComfyUI files
  data           examples, one-bucket batches in a resumable order, collation
  step           one training step (video-only fast path, audio-video path, first-frame conditioning)
  optim          optimizer and LR schedule
  checkpoint     atomic checkpoints, resume with a config fingerprint (durable: fsync + rename)
  sinks, plot    metrics: progress bar, CSV history and loss curve, TensorBoard
  loop           the loop that ties them together
"""
