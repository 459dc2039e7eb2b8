"""The one command: `python run.py [group=option ...] [key=value ...]` (Hydra).

    python run.py                                   embedded default: digits, 1LoRA, CPU, minutes
    python run.py method=onelora task=cifar100      the paper's ViT-B/16 on CIFAR-100
    python run.py mode=count model=vit_base method=vera
    python run.py -m experiment=mini                a sweep
    python run.py --help                            config groups and their options
"""

import hydra
from omegaconf import DictConfig

import onelora  # noqa: F401  (registers the ${cwd:} resolver the configs use)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from onelora.cli import run_from_cli

    run_from_cli(cfg)


if __name__ == "__main__":
    main()
