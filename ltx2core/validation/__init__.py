"""Validation: videos sampled from the trained LoRA with the diffusers LTX-2 pipelines, written as mp4 files
and contact sheets. `settings` says what to sample, `sampling` samples it, `video_io` and `contact_sheet`
write it."""
