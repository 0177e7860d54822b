"""Teams' API keys (`serve --keys-file`): each key authenticates, and a key with a strong_share of its own has a
strong-call budget held on that team's traffic alone, reported per key in /metrics."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from edgeroute.runtime.errors import ConfigurationError
from edgeroute.runtime.serving.keys import read_keys_file
from edgeroute.runtime.serving.policy import RouterSet
from edgeroute.runtime.serving.server import create_app
from servers import realistic_prompts, server_config, serving

ROUTER = "static-distilled-gpt4-mixtral"
TOKENS = {"team-a": "tok-aaaaaaaa", "team-b": "tok-bbbbbbbb", "team-c": "tok-cccccccc"}


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _keys_file(tmp_path, shares: dict[str, float | None]):
    lines = []
    for name, share in shares.items():
        lines += ["[[key]]", f'name = "{name}"', f'sha256 = "{_sha(TOKENS[name])}"']
        lines += [] if share is None else [f"strong_share = {share}"]
    path = tmp_path / "keys.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_each_team_holds_its_own_strong_share_and_metrics_say_so(upstream, tmp_path):
    keys = read_keys_file(_keys_file(tmp_path, {"team-a": 0.2, "team-b": 0.6, "team-c": None}))
    # Half of these prompts are hard chat requests, which the default router rates above MMLU/GSM8K's 10%-strong
    # threshold (0.30), and half easy ones, rated under their 90%-strong one (0.05): the default clamp would stop
    # team-a's budget at the ceiling and team-b's at the floor (README).
    config = server_config(upstream, keys=keys, budget_floor=0.0, budget_ceiling=1.0)
    shares = {}
    with serving(create_app(config, RouterSet([ROUTER]))) as url, httpx.Client(timeout=30) as client:
        for name, seed in (("team-a", 1), ("team-b", 2)):
            headers = {"Authorization": f"Bearer {TOKENS[name]}"}
            tiers = []
            for prompt in realistic_prompts(300, seed=seed):
                body = {"model": "router-default", "messages": [{"role": "user", "content": prompt}]}
                response = client.post(url + "/v1/chat/completions", json=body, headers=headers)
                assert response.status_code == 200
                tiers.append(response.headers["x-edgeroute-tier"])
            shares[name] = tiers[100:].count("strong") / 200  # the last 200, once the window has filled
        plain = client.post(  # a key without a share of its own: the calibrated threshold, no budget
            url + "/v1/route", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {TOKENS['team-c']}"}
        ).json()["decisions"][0]
        assert plain["budget"] is None
        assert client.post(url + "/v1/route", json={"prompt": "hi"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        metrics = client.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKENS['team-a']}"}).text
    assert abs(shares["team-a"] - 0.2) <= 0.08 and abs(shares["team-b"] - 0.6) <= 0.08, shares
    assert f'edgeroute_strong_share_target{{key="team-a",router="{ROUTER}"}} 0.2' in metrics
    assert f'edgeroute_strong_share_target{{key="team-b",router="{ROUTER}"}} 0.6' in metrics


def test_the_server_token_still_works_beside_the_keys(upstream, tmp_path):
    config = server_config(upstream, keys=read_keys_file(_keys_file(tmp_path, {"team-a": 0.2})), auth_token="server-token")
    with serving(create_app(config, RouterSet([ROUTER]))) as url:
        for token, status in (("server-token", 200), (TOKENS["team-a"], 200), (TOKENS["team-b"], 401), (None, 401)):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            assert httpx.post(url + "/v1/route", json={"prompt": "hi"}, headers=headers).status_code == status, token


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "a keys file holds one or more [[key]] tables and nothing else (name, sha256, strong_share)"),
        ('[[key]]\nname = "a b"\nsha256 = "00"\n', "key 1: name must be 1 to 64 printable ASCII characters without spaces"),
        ('[[key]]\nname = "a"\nsha256 = "00"\n', 'key 1 (a): sha256 must be 64 lowercase hex digits: printf %s "$TOKEN" | sha256sum'),
        (f'[[key]]\nname = "a"\nsha256 = "{"0" * 64}"\nstrong_share = 1.5\n', "key 1 (a): strong_share must be a number strictly"),
        (f'[[key]]\nname = "a"\nsha256 = "{"0" * 64}"\ntoken = "x"\n', "key 1: give only name, sha256 and strong_share"),
        (f'[[key]]\nname = "a"\nsha256 = "{"0" * 64}"\n[[key]]\nname = "a"\nsha256 = "{"1" * 64}"\n', "two keys share a name"),
        ("[[key]\n", "not a TOML keys file"),
        (f'[[key]]\nname = "a"\nsha256 = "{_sha("")}"\n', "key 1 (a): sha256 is that of an empty token"),
    ],
)
def test_a_bad_keys_file_is_refused_naming_the_file_and_the_fix(tmp_path, text, message):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        read_keys_file(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_sticky_conversations_are_remembered_per_team(upstream, tmp_path):
    """Two teams opening the same conversation: each gets its own decision, counted in its own budget."""
    keys = read_keys_file(_keys_file(tmp_path, {"team-a": 0.2, "team-b": 0.6}))
    config = server_config(upstream, keys=keys, sticky=True)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Explain monads."}]
    with serving(create_app(config, RouterSet([ROUTER]))) as url, httpx.Client(timeout=30) as client:
        targets = {}
        for name in ("team-a", "team-b"):
            headers = {"Authorization": f"Bearer {TOKENS[name]}"}
            body = {"model": "router-default", "messages": messages}
            answer = client.post(url + "/v1/chat/completions", json=body, headers=headers).json()
            targets[name] = answer["edgeroute"]["budget"]["target"]
    assert targets == {"team-a": 0.2, "team-b": 0.6}
