"""XMEF (seed 001) beyond the model: experiment configs, parameter reports, the miniature pretraining and LNA
finetuning loops on the synthetic corpus, translation directions (zero-shot) and joint speech-text finetuning."""
