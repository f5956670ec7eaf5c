"""Post-training on a model folder: SFT, a Bradley-Terry reward model, single-stage DPO (SPEC §5.7)."""
