"""Issue 26, item 9: RouteLLM's model names. `bert` and `mf` name bundles that score on that kind's scale,
and `router-NAME-sPCT` asks for a share of strong calls, for clients (LiteLLM) that set only the model string."""

from __future__ import annotations

import httpx
import pytest

from edgeroute.runtime import InvalidInputError
from edgeroute.runtime.serving.policy import ModelField, RouterSet, parse_model_field

STATIC, BERT = "static-distilled-gpt4-mixtral", "bert-minilm-gpt4-mixtral"


@pytest.mark.parametrize(
    "model, parsed",
    [
        ("router-bert-s30", ModelField("bert", None, 0.30)),
        ("router-mf-s2.5", ModelField("mf", None, 0.025)),
        ("router-mf-0.11593", ModelField("mf", 0.11593)),
        ("router-default", ModelField("default", None)),
    ],
)
def test_model_names_parse_thresholds_and_shares(model, parsed):
    assert parse_model_field(model) == parsed


@pytest.mark.parametrize("model", ["router-bert-s0", "router-bert-s100", "router-bert-s250"])
def test_a_share_outside_0_100_is_refused(model):
    with pytest.raises(InvalidInputError) as caught:
        parse_model_field(model)
    assert str(caught.value) == f"model {model!r}: the share form 'router-NAME-sPCT' takes a percentage strictly between 0 and 100"


@pytest.mark.runtime_only
def test_mf_never_names_a_distilled_router_on_another_scale():
    routers = RouterSet([STATIC, BERT])
    assert routers.get("bert").name == BERT
    with pytest.raises(InvalidInputError) as caught:
        routers.get("mf")
    assert str(caught.value) == (
        "router 'mf' names RouteLLM's mf router, and no bundle of that kind is loaded here (its thresholds would not fit "
        f"another kind's scores); load one with --router, or name a loaded router: {STATIC}, {BERT}, default, bert"
    )


def test_mf_names_a_matrix_factorization_bundle(mf_bundle):
    routers = RouterSet([STATIC, mf_bundle])
    assert routers.get("mf").name == "mf_bundle"


@pytest.fixture(scope="module")
def calibrated_bert(tmp_path_factory, bert_bundle):
    from servers import calibrated_copy

    return calibrated_copy(bert_bundle, tmp_path_factory.mktemp("names") / "bert_calibrated", "bert_calibrated")


def test_share_form_in_the_model_string_routes_at_the_calibrated_threshold(upstream, calibrated_bert):
    pytest.importorskip("starlette")
    from edgeroute.runtime.serving.server import create_app
    from servers import server_config, serving

    app = create_app(server_config(upstream), RouterSet([calibrated_bert]))
    messages = [{"role": "user", "content": "hi"}]
    with serving(app) as url:
        shared = httpx.post(url + "/v1/chat/completions", json={"model": "router-bert-s30", "messages": messages}).json()
        assert shared["edgeroute"]["threshold"] == pytest.approx(0.7)  # between the 10% (0.9) and 50% (0.5) points
        both = httpx.post(url + "/v1/chat/completions", json={"model": "router-bert-s30", "strong_pct": 0.3, "messages": messages})
        assert both.status_code == 400
        assert both.json()["error"]["message"] == "give the share either in the model name (router-NAME-sPCT) or as strong_share, not both"
        body = {"model": "router-bert", "messages": messages}
        new, old = ({**body, key: 0.3} for key in ("strong_share", "strong_pct"))  # strong_pct: the old name, still accepted
        thresholds = [httpx.post(url + "/v1/chat/completions", json=b).json()["edgeroute"]["threshold"] for b in (new, old)]
        assert thresholds == [pytest.approx(0.7)] * 2
        twice = httpx.post(url + "/v1/route", json={"prompt": "hi", "strong_share": 0.3, "strong_pct": 0.3}).json()
        assert twice["error"]["message"] == "give strong_share or its old name strong_pct, not both"
