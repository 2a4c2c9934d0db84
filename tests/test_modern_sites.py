"""Every dropout a modern network has: attention, recurrent, stochastic depth, floats read in
forward (found by name and proven by a forward pass), kinds a user declares, and roles."""

import json
import logging
import types

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from droptune import build
from droptune.build import build_model, model_sites
from droptune.config import validate
from droptune.errors import ConfigError
from droptune.mc_dropout import mc_log_probabilities
from droptune.models.sites import holders, prove, role_of, walk
from droptune.report.candidates import AS_WRITTEN, NO_DROPOUT, Candidate, baselines
from droptune.report.run import make_report
from droptune.schedules import Schedule, ScheduledDropout
from droptune.search import parse_space, with_sites
from droptune.study import optimize
from tests.helpers import compose_config
from tests.test_user_models import run, trial_runs

TRANSFORMER = (
    "model=custom",
    "model._target_=examples.mynets.transformer.PatchTransformer",
    "+model.patch=4",  # digits' 8x8 images: 4 tokens
    "model.dropout.kinds={examples.mynets.transformer.Attention:attn_p}",
)
DIGITS = ((1, 8, 8), 10)


def sites_of(make_cfg, *overrides):
    return model_sites(make_cfg("data=digits", *TRANSFORMER, *overrides)["model"], *DIGITS)


def blocks(n_blocks: int, n_layers: int) -> dict[str, str]:
    """The sites PatchTransformer's code writes, by path and kind, read off its source."""
    found = {"embed_drop": "module", "lstm": "recurrent", "drop_rate": "float"}
    for i in range(n_blocks):
        found |= {f"blocks.{i}.mlp.2": "module", f"blocks.{i}.drop_path": "path"}
        found[f"blocks.{i}.attn.attn_p"] = "declared"
    for i in range(n_layers):
        found[f"encoder.layers.{i}.self_attn"] = "attention"
        for name in ("dropout", "dropout1", "dropout2"):
            found[f"encoder.layers.{i}.{name}"] = "module"
    return found


def test_every_kind_of_site_is_found_with_its_role_and_a_rate_never_read_is_inert(make_cfg):
    found = sites_of(make_cfg, "+model.depth=2", "+model.encoder_layers=2")
    assert {s.path: s.kind for s in found.sites} == blocks(2, 2)
    roles = {s.path: s.role for s in found.sites}
    assert roles["encoder.layers.1.dropout1"] == "encoder.layers.*.dropout1"
    assert roles["blocks.0.attn.attn_p"] == roles["blocks.1.attn.attn_p"] == "blocks.*.attn.attn_p"
    assert roles["embed_drop"] == "embed_drop" and roles["lstm"] == "lstm"
    assert {s.source for s in found.sites if s.kind == "attention"} == {
        "MultiheadAttention.dropout"
    }
    (inert,) = found.inert
    assert inert.site.path == "attention_dropout" and "same training-mode output" in inert.reason


def test_roles_take_out_block_indices_but_keep_a_sequentials_own_index():
    assert role_of("encoder.layers.3.dropout1") == "encoder.layers.*.dropout1"
    assert (
        role_of("encoder.layers.encoder_layer_11.mlp.2") == "encoder.layers.encoder_layer_*.mlp.2"
    )
    assert role_of("h.0.attn.dropout") == "h.*.attn.dropout"
    assert role_of("head.2") == "head.2" and role_of("layer3.drop") == "layer3.drop"


def _output(net: nn.Module, x: torch.Tensor, train: bool = True) -> torch.Tensor:
    net.train(train)
    torch.manual_seed(7)
    with torch.no_grad():
        return net(x)


def test_each_kinds_rate_once_set_is_what_the_forward_pass_does(make_cfg):
    x = torch.randn(16, 1, 8, 8)
    off = make_cfg("data=digits", *TRANSFORMER, "model.dropout.sites={*:0.0}")["model"]
    net = build_model(off, *DIGITS)
    torch.testing.assert_close(_output(net, x), _output(net, x, train=False), atol=1e-5, rtol=0)
    for site in model_sites(off, *DIGITS).sites:
        on = make_cfg(
            "data=digits", *TRANSFORMER, f"model.dropout.sites={{*:0.0,{site.path}:0.9}}"
        )["model"]
        built = build_model(on, *DIGITS)
        holder = built.get_submodule(site.holder)
        assert getattr(holder, site.attribute) == 0.9, site.path
        built.load_state_dict(net.state_dict())
        assert not torch.allclose(_output(built, x), _output(net, x)), site.path


def test_a_one_layer_rnn_offers_no_recurrent_site():
    net = nn.Sequential(nn.GRU(4, 4, 1), nn.LSTM(4, 4, 2, dropout=0.3))
    found = walk(net)
    assert [(s.path, s.kind, s.rate) for s in found.sites] == [("1", "recurrent", 0.3)]
    assert [i.site.path for i in found.inert] == ["0"] and "1-layer" in found.inert[0].reason


def test_torchvisions_vit_has_attention_sites_and_its_top_level_rates_are_inert(make_cfg):
    """torchvision keeps `dropout` and `attention_dropout` on the model after building its
    layers from them: setting them there changes nothing, and droptune says so."""
    vit = VisionTransformer(8, 4, 2, 2, 8, 16, dropout=0.1, attention_dropout=0.1, num_classes=3)
    found = walk(vit)
    acting, inert = prove(vit, found.candidates, (3, 8, 8))
    assert acting == [] and {i.site.path for i in inert} == {"dropout", "attention_dropout"}
    roles = {s.role for s in found.sites if s.kind == "attention"}
    assert roles == {"encoder.layers.encoder_layer_*.self_attention"}


class FlashAttention(nn.Module):
    """nanoGPT's CausalSelfAttention on its flash path: `attn_dropout` is built and never
    called; the float `dropout` is what scaled_dot_product_attention reads."""

    def __init__(self, dim: int = 8, p: float = 0.2) -> None:
        super().__init__()
        self.dim, self.dropout = dim, p
        self.c_attn, self.c_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.attn_dropout, self.resid_dropout = nn.Dropout(p), nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.dim, 2)
        p = self.dropout if self.training else 0.0
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.c_proj(y))


def test_a_dropout_module_the_forward_never_calls_is_inert_and_the_float_it_reads_acts():
    net = FlashAttention()
    found = walk(net)
    acting, inert = prove(net, found.settable, (5, 8))
    assert [s.path for s in acting] == ["resid_dropout", "dropout"]
    assert [i.site.path for i in inert] == ["attn_dropout"]


class DropPath(nn.Module):
    """Stochastic depth as timm and most research code write it: a float `drop_prob`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.drop_prob)
        return x * keep / (1 - self.drop_prob)


def test_a_modules_float_drop_prob_is_a_path_site_that_acts():
    net = nn.Sequential(nn.Linear(6, 6), DropPath(0.1))
    found = walk(net)
    assert [(s.path, s.kind, s.source) for s in found.sites] == [
        ("1", "path", "DropPath.drop_prob")
    ]
    assert found.candidates == []
    assert prove(net, found.sites, (6,)) == (found.sites, [])


class TokenNet(nn.Module):
    """A model of token ids: no float probe batch goes through it."""

    def __init__(self, n_classes: int, drop_rate: float = 0.1) -> None:
        super().__init__()
        self.embed, self.drop = nn.Embedding(16, 8), nn.Dropout(0.2)
        self.head, self.drop_rate = nn.Linear(8, n_classes), drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            raise TypeError("TokenNet takes token ids")
        return self.head(self.drop(self.embed(x).mean((1, 2, 3))))


def test_a_model_that_takes_no_probe_keeps_its_classes_sites_and_says_why_of_the_rest(make_cfg):
    found = model_sites(
        make_cfg("data=digits", "model=custom", "model._target_=tests.test_modern_sites.TokenNet")[
            "model"
        ],
        *DIGITS,
    )
    assert [s.path for s in found.sites] == ["drop"]
    ((path, reason),) = [(i.site.path, i.reason) for i in found.inert]
    assert path == "drop_rate" and "TypeError: TokenNet takes token ids" in reason


def test_a_key_that_only_an_inert_rate_matches_is_refused_naming_it(make_cfg):
    with pytest.raises(ConfigError) as raised:
        sites_of(make_cfg, "model.dropout.sites={attention_dropout:0.3}")
    assert raised.value.key == "model.dropout.sites"
    assert "attention_dropout" in str(raised.value) and "make sites" in str(raised.value)


@pytest.mark.parametrize(
    ("kinds", "words"),
    [
        ("{examples.mynets.transformer.Attentoin:attn_p}", "importable"),
        ("{examples.mynets.transformer.Attention:heads}", "must be a float rate"),
        ("{examples.mynets.transformer.Attention:attn_q}", "must be a float rate"),
        ("{examples.mynets.nets.SmallConvNet:p}", "no module is a"),
        ("{examples.mynets.transformer.math:pi}", "to be a class"),
        ("{examples.mynets.transformer.Attention:1x}", "the name of an attribute"),
    ],
)
def test_a_bad_kind_is_refused_with_one_line_before_any_trial(make_cfg, kinds, words):
    with pytest.raises(ConfigError) as raised:
        cfg = validate(make_cfg("data=digits", *TRANSFORMER[:3], f"model.dropout.kinds={kinds}"))
        model_sites(cfg["model"], *DIGITS)
    assert raised.value.key.startswith("model.dropout.kinds")
    assert words in str(raised.value) and "\n" not in str(raised.value)


def _space(make_cfg, *overrides):
    cfg = validate(
        make_cfg(
            "data=digits", *TRANSFORMER, "+model.depth=3", "+model.encoder_layers=3",
            *overrides, config="tune",
        )
    )  # fmt: skip
    found = model_sites(cfg["model"], *DIGITS).sites
    return [name for name in parse_space(with_sites(cfg["search"], found), cfg) if name != "lr"]


def test_search_sites_gives_one_rate_per_role_or_per_site(make_cfg):
    by_role = _space(make_cfg)
    roles = {role_of(path) for path in blocks(3, 3)}
    assert sorted(by_role) == sorted(f"rate/{role}" for role in roles) and len(roles) == 10
    per_site = _space(make_cfg, "search.site_groups=per_site")
    assert sorted(per_site) == sorted(f"rate/{path}" for path in blocks(3, 3))
    assert _space(make_cfg, "search.sites=[blocks.*]") == ["rate/blocks.*"]


def test_a_role_key_sets_exactly_its_sites(make_cfg):
    """`blocks.*.drop_path` as a glob would also match nothing else here, but `*.dropout` as a
    glob matches `encoder.layers.0.dropout` and more: a role selects its own sites only."""
    found = sites_of(
        make_cfg,
        "model.dropout.sites={*:0.0,encoder.layers.*.dropout:0.4,blocks.*.attn.attn_p:0.3}",
    )
    rates = {s.path: s.rate for s in found.sites}
    assert rates["encoder.layers.0.dropout"] == 0.4 and rates["encoder.layers.0.dropout1"] == 0.0
    assert rates["blocks.0.attn.attn_p"] == rates["blocks.1.attn.attn_p"] == 0.3
    assert sum(r > 0 for r in rates.values()) == 3


def test_a_variant_swaps_module_sites_only_and_says_so_once(make_cfg, caplog):
    model = make_cfg("data=digits", *TRANSFORMER, "model.dropout.variant=gaussian")["model"]
    build._say_once.cache_clear()  # once a process: an earlier test may have said it already
    with caplog.at_level(logging.WARNING, logger="droptune"):
        for _ in range(2):
            net = build_model(model, *DIGITS)
    said = [r.message for r in caplog.records if "swaps dropout modules only" in r.message]
    assert len(said) == 1, said
    kinds = {s.path: (s.kind, s.cls) for s in walk(net).sites}
    assert kinds["embed_drop"] == ("module", "GaussianDropout")
    assert kinds["encoder.layers.0.self_attn"] == ("attention", "MultiheadAttention")


def test_schedules_and_mc_dropout_reach_sites_that_are_not_modules(make_cfg):
    only_attention = "model.dropout.sites={*:0.0,encoder.layers.*.self_attn:0.5}"
    model = make_cfg("data=digits", *TRANSFORMER, only_attention)["model"]
    net, sites = build_model(model, *DIGITS), model_sites(model, *DIGITS).sites
    trainer = types.SimpleNamespace(current_epoch=3, max_epochs=4)  # past early dropout's cutoff
    ScheduledDropout(net, sites, Schedule("early", 0.5)).on_train_epoch_start(trainer, None)
    assert net.encoder.layers[0].self_attn.dropout == 0.0
    trainer.current_epoch = 0
    ScheduledDropout(net, sites, Schedule("early", 0.5)).on_train_epoch_start(trainer, None)
    assert net.encoder.layers[0].self_attn.dropout == 0.5
    net.eval()
    x = torch.randn(8, 1, 8, 8)
    turned_on = holders(net, sites)
    deterministic = torch.log_softmax(net(x), 1)
    assert torch.allclose(mc_log_probabilities(net, x, 1), deterministic, atol=1e-5)  # modules
    sampled = mc_log_probabilities(net, x, 1, turned_on)
    assert not torch.allclose(sampled, deterministic, atol=1e-3)
    assert not any(h.training for h in turned_on) and not net.encoder.layers[0].norm1.training


def test_a_users_baselines_are_no_dropout_and_its_own_rates_as_written(make_cfg):
    tuned = ("data=digits", *TRANSFORMER, "model.dropout.sites={*:0.45}", "model.max_norm=3")
    none, written = baselines(Candidate("trial 0", tuned), "custom")
    assert (none.name, written.name) == (NO_DROPOUT, AS_WRITTEN)
    rates = [
        {s.path: s.rate for s in model_sites(make_cfg(*c)["model"], *DIGITS).sites}
        for c in (tuned, none.overrides, written.overrides)
    ]
    own = {
        s.path: s.rate
        for s in walk(build_model(make_cfg(*TRANSFORMER[:3])["model"], *DIGITS)).sites
    }
    assert set(rates[0].values()) == {0.45} and set(rates[1].values()) == {0.0}
    assert {p: r for p, r in rates[2].items() if p in own} == own  # the code's own defaults
    assert make_cfg(*written.overrides)["model"]["max_norm"] is None


def test_a_study_on_a_transformer_searches_roles_and_records_every_sites_rate(tmp_path):
    done = run(
        tmp_path, "tune", "data=digits", *TRANSFORMER, "trainer.max_epochs=1",
        "study.n_trials=2", "study.pruner=none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = trial_runs(tmp_path)
    assert len(runs) == 2
    for trial_run in runs:
        params = trial_run.data.params
        for path in blocks(2, 1):  # every site's rate is its role's sampled rate
            role = role_of(path).replace("*", "_")  # MLflow's keys take no '*'
            assert params[f"site.{path}"].split()[0] == params[f"trial.rate/{role}"], path
        assert not any("attention_dropout" in key for key in params if key.startswith("trial."))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "rate/blocks.*.attn.attn_p" in summary["best_params"]


@pytest.mark.slow
def test_a_report_on_a_users_transformer_retrains_its_rates_as_written(tmp_path):
    base = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "data=digits", *TRANSFORMER,
        "trainer.max_epochs=1", "study.name=t", "study.pruner=none",
    ]  # fmt: skip
    optimize(compose_config(*base, "study.n_trials=2", config_name="tune"), {}, base)
    overrides = [*base, "report.top_k=1", "report.seeds=2", "report.reference=as written"]
    result = make_report(compose_config(*overrides, config_name="report"), overrides)
    rows = {row["name"]: row for row in result["configs"]}
    assert list(rows)[1:] == [NO_DROPOUT, AS_WRITTEN]
    assert "vs_reference" in rows[NO_DROPOUT] and "vs_reference" not in rows[AS_WRITTEN]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    parent = result["mlflow_report_run_id"]
    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    written = [r for r in runs if r.data.tags["report_candidate"] == AS_WRITTEN]
    assert len(written) == 2
    for retrain in written:  # PatchTransformer's own rates, every one of them
        rates = {k: v.split()[0] for k, v in retrain.data.params.items() if k.startswith("site.")}
        assert set(rates) == {f"site.{path}" for path in blocks(2, 1)}
        assert set(rates.values()) == {"0.1"}


def test_a_site_grouping_that_is_not_one_is_refused_naming_the_choices(make_cfg):
    with pytest.raises(ConfigError) as raised:
        validate(
            make_cfg("data=digits", *TRANSFORMER, "search.site_groups=by_block", config="tune")
        )
    assert raised.value.key == "search.site_groups" and "per_site" in str(raised.value)
