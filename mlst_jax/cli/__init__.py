"""The `mlst` console script. Each subcommand parses its flags and calls one library function."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mlst_jax.audio import SAMPLE_RATE, load_audio
from mlst_jax.cli.analyze import add_analyze_command
from mlst_jax.cli.data import add_data_commands
from mlst_jax.cli.sharing import add_sharing_commands
from mlst_jax.cli.train import add_train_commands
from mlst_jax.convert import convert
from mlst_jax.jobs.export import run_translator
from mlst_jax.train.run import Run
from mlst_jax.translator import Translator


def _translate(args) -> int:
    if (Path(args.checkpoint) / "checkpoints").is_dir():  # a training run: the average of its last checkpoints
        with Run(args.checkpoint) as run:
            last = run.config.train.average_last if args.last is None else args.last
            translator = run_translator(run, last, args.tgt_lang)
    else:
        if args.last is not None:
            raise ValueError(f"--last {args.last}: {args.checkpoint} is not a training run")
        translator = Translator.from_pretrained(args.checkpoint, trust_pickle=args.trust_pickle)
    translator.lang_id(args.tgt_lang)  # an unknown or unserved language fails before the audio is read
    audio = [load_audio(path) for path in args.audio]
    for start in range(0, len(audio), args.batch_size):
        chunk = audio[start: start + args.batch_size]
        texts = translator.translate([w for w, _ in chunk], SAMPLE_RATE, args.tgt_lang,
                                     names=args.audio[start: start + args.batch_size], beam_size=args.beam,
                                     length_penalty=args.lenpen, max_len_a=args.max_len_a,
                                     max_len_b=args.max_len_b)
        for path, text in zip(args.audio[start:], texts):
            print(json.dumps({"audio": path, "tgt_lang": args.tgt_lang, "translation": text}, ensure_ascii=False),
                  flush=True)
    return 0


def _convert(args) -> int:
    convert(args.src, args.dst, trust_pickle=args.trust_pickle)
    print(json.dumps({"src": args.src, "dst": args.dst}))
    return 0


def _trust_pickle_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickle", action="store_true",
                   help="fully unpickle fairseq checkpoints (fairseq >= 0.10 stores an omegaconf config; needs the "
                        "omegaconf package); only for files you trust")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlst", description="Multilingual speech translation in JAX.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("translate", help="translate audio files; prints one JSON line per file")
    p.add_argument("--checkpoint", required=True,
                   help="HF dir (Speech2Text, or SpeechEncoderDecoderModel wav2vec2 + mBART = XMEF), fairseq S2T "
                        "checkpoint, exported model dir, or a training run (the average of its last checkpoints)")
    p.add_argument("--last", type=int,
                   help="with a training run: average its last LAST checkpoints (default: the run's "
                        "train.average_last)")
    p.add_argument("--tgt-lang", required=True,
                   help="target language: the code of the model's <lang:xx> tag; for mBART-50 models 'de' or 'de_DE'")
    p.add_argument("--beam", type=int, default=5, help="beam size; 1 is greedy decoding (default: %(default)s)")
    p.add_argument("--lenpen", type=float, default=1.0,
                   help="length penalty: a finished hypothesis scores sum(log p) / length ** LENPEN; above 1 favors "
                        "longer outputs (default: %(default)s)")
    p.add_argument("--max-len-a", type=float, default=0.0,
                   help="at most MAX_LEN_A x input length + MAX_LEN_B tokens, the input length in fbank frames "
                        "(S2T) or samples (XMEF) (default: %(default)s)")
    p.add_argument("--max-len-b", type=int, default=200, help="see --max-len-a (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="audio files decoded together (default: %(default)s)")
    p.add_argument("audio", nargs="+", help="audio files (any format librosa/soundfile reads)")
    _trust_pickle_flag(p)
    p.set_defaults(func=_translate)

    p = sub.add_parser("convert", help="convert an HF or fairseq S2T checkpoint into an HF directory")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    _trust_pickle_flag(p)
    p.set_defaults(func=_convert)


    add_data_commands(sub)


    add_train_commands(sub)


    add_sharing_commands(sub)


    add_analyze_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_config_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.config_overrides = extra  # `--config.FIELD=VALUE` of the commands that take a config file
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ValueError as e:
        print(f"mlst {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
