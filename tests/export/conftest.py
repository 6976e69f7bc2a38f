"""Shared fixtures of the export tests: an export of a tiny (randomly initialized) super_vit supernet."""

import os

import pytest

from effjax.job import run as pipeline
from effjax.job import subnet_search as ss
from effjax.config.load import load_config
from tests.foundation.helpers import REPO, untrained_evaluator

# widths, sparse attention, MoE top-1 and int4 body / int8 first-last layers: every path of the export
SUBNET = {"encoder_width": 0.5, "decoder_width_digit": 0.5, "decoder_width_parity": 0.25, "decoder_width_ge5": 1.0,
          "attention_keep_ratio": 0.5, "moe_top_k": 1, "weight_bits": 4}


@pytest.fixture(scope="session")
def evaluator():
    config = load_config(os.path.join(REPO, "configs", "pipeline.py") + ":digits,tiny")
    config.log.progress_bar = False
    return untrained_evaluator(config)


@pytest.fixture(scope="session")
def subnet(evaluator):
    return ss.subnet_from_params(SUBNET, evaluator.tasks)


@pytest.fixture(scope="session")
def exported_dir(evaluator, subnet, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("export") / "point")
    point = {"id": 7, "config": subnet.to_dict(), "cost": evaluator.cost(subnet)}
    pipeline.export_point(evaluator, point, directory, evaluator.setup.config)
    return directory
