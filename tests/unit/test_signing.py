"""Signed control commands: canonical bytes, signatures, the verifier's reasons, key rings."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from model_canary.agents.router.command_guard import CommandGuard
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import Action, ControlCommand, Decision, Outcome
from model_canary.streams.settings import Settings
from model_canary.streams.signing import Verifier, canonical_bytes, sign, sign_if_keyed
from model_canary.streams.signing_keys import KeyRing, Secret, SigningKey
from tests.unit.record_strategies import EXAMPLES, T0, record_strategy

SECRET = "s3cret-0123456789abcdef"
# "ops" may sign for anyone: these tests are about signatures (issuers: see the end).
RING = KeyRing.parse(f"ops[*]:{SECRET}\nevaluator:another-secret-0123456789")
OPS = RING.keys[0]
COMMANDS = record_strategy(ControlCommand)
FIELDS = [f.name for f in dataclasses.fields(ControlCommand) if f.name != "signature"]


def _cmd(**changes: Any) -> ControlCommand:
    base = ControlCommand(command_id="c1", model="iris", action=Action.PAUSE, issued_at=T0)
    return dataclasses.replace(base, **changes)


# --- canonical bytes and signatures ------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_ascii_json_without_the_signature_or_nulls() -> None:
    command = dataclasses.replace(EXAMPLES[ControlCommand], reason="für", expected_revision=None)
    assert canonical_bytes(command) == (
        b"model-canary/control-command/v1\n"
        b'{"action":"start","baseline_version":"v1","canary_version":"v2","command_id":"c1",'
        b'"issued_at":1700000000123,"issued_by":"evaluator","key_id":"k1","mode":"shadow",'
        b'"model":"iris","plan_json":"{\\"steps\\":[500,10000]}","reason":"f\\u00fcr",'
        b'"shadow_sample_bp":2000,"steps_bp":[500,10000],"weight_bp":500}'
    )


def test_a_signed_command_names_its_key_and_verifies() -> None:
    signed = sign(_cmd(), OPS)
    assert signed.key_id == "ops" and signed.signature is not None
    assert len(signed.signature) == 64 and int(signed.signature, 16) >= 0
    assert Verifier(RING).verify(signed, T0) is None


@given(COMMANDS)
def test_the_signature_survives_the_avro_round_trip(command: ControlCommand) -> None:
    codec = codec_for(ControlCommand)
    signed = sign(command, OPS)
    assert Verifier(RING).authentic(codec.decode(codec.encode(signed))) is None


@given(COMMANDS, COMMANDS, st.sampled_from(FIELDS))
def test_changing_any_field_breaks_the_signature(
    command: ControlCommand, other: ControlCommand, name: str
) -> None:
    signed = sign(command, OPS)
    assume(getattr(other, name) != getattr(signed, name))
    tampered = dataclasses.replace(signed, **{name: getattr(other, name)})
    rejection = Verifier(RING).authentic(tampered)
    assert rejection is not None
    assert rejection.reason in ("bad-signature", "unknown-key-id", "unsigned")


def test_sign_if_keyed_signs_only_unsigned_commands_and_only_with_a_key() -> None:
    assert sign_if_keyed(_cmd(), KeyRing()) == _cmd()
    signed = sign_if_keyed(_cmd(), RING)
    assert signed.key_id == "ops"
    other = KeyRing.parse("x:yyyyyyyyyyyyyyyyyyyyyy")
    assert sign_if_keyed(signed, other) is signed


# --- the verifier's reasons --------------------------------------------------------------------


def _reason(verifier: Verifier, command: ControlCommand, **kw: Any) -> str | None:
    rejection = verifier.verify(command, kw.pop("now", T0), **kw)
    return rejection.reason if rejection else None


def test_unsigned_unknown_key_and_forged_commands_are_refused() -> None:
    v = Verifier(RING)
    assert _reason(v, _cmd()) == "unsigned"
    assert _reason(v, _cmd(key_id="ops")) == "unsigned"
    assert _reason(v, _cmd(signature="00" * 32)) == "unsigned"
    stranger = SigningKey("intruder", Secret(b"x" * 32))
    assert _reason(v, sign(_cmd(), stranger)) == "unknown-key-id"
    wrong_secret = SigningKey("ops", Secret(b"not-the-ops-secret-at-all"))
    assert _reason(v, sign(_cmd(), wrong_secret)) == "bad-signature"
    tampered = dataclasses.replace(sign(_cmd(action="set_weight", weight_bp=100), OPS), weight_bp=1)
    assert _reason(v, tampered) == "bad-signature"
    assert _reason(v, dataclasses.replace(sign(_cmd(), OPS), signature="é" * 64)) == (
        "bad-signature"
    )
    assert len(v) == 0  # nothing refused is remembered


def test_every_key_of_the_ring_verifies() -> None:
    v = Verifier(RING)
    assert _reason(v, sign(_cmd(command_id="a", issued_by="evaluator"), RING.keys[1])) is None
    assert _reason(v, sign(_cmd(command_id="b"), OPS)) is None


def test_stale_and_future_commands_are_refused_at_the_window_edges() -> None:
    edge = timedelta(seconds=300)
    ms = timedelta(milliseconds=1)
    signed = sign(_cmd(), OPS)
    cases = [(edge + ms, "stale"), (edge, None), (-edge, None), (-edge - ms, "future-timestamp")]
    for after, reason in cases:
        assert _reason(Verifier(RING, window=edge), signed, now=T0 + after) == reason


def test_a_command_id_seen_before_is_a_replay_unless_read_again_from_the_same_place() -> None:
    v = Verifier(RING)
    signed = sign(_cmd(), OPS)
    assert _reason(v, signed, origin=(0, 5)) is None
    assert _reason(v, signed, origin=(0, 5)) is None  # redelivered after an aborted transaction
    assert _reason(v, signed, origin=(0, 9)) == "replayed"
    assert _reason(v, signed) == "replayed"
    # A new command reusing the id is a replay too, whatever else it says.
    assert _reason(v, sign(_cmd(reason="again"), OPS), origin=(0, 10)) == "replayed"


def test_ids_are_forgotten_once_their_commands_are_stale_and_a_clock_step_back_revives_none() -> (
    None
):
    window = timedelta(seconds=60)
    v = Verifier(RING, window=window)
    signed = sign(_cmd(), OPS)
    assert _reason(v, signed, now=T0) is None
    assert len(v) == 1
    assert (
        _reason(v, sign(_cmd(command_id="c2", issued_at=T0 + 2 * window), OPS), now=T0 + 2 * window)
        is None
    )
    assert len(v) == 1  # c1 forgotten: it can only come back as stale
    assert _reason(v, signed, now=T0) == "stale"  # the clock stepped back: still refused


def test_remember_keeps_authentic_commands_and_the_first_place_they_were_read() -> None:
    v = Verifier(RING)
    signed = sign(_cmd(), OPS)
    assert not v.remember(_cmd(command_id="unsigned"), (0, 1))
    assert v.remember(signed, (0, 2)) and v.remember(signed, (0, 7))
    assert _reason(v, signed, origin=(0, 2)) is None
    assert _reason(v, signed, origin=(0, 7)) == "replayed"
    assert _reason(v, _cmd(command_id="unsigned")) == "unsigned"


def test_a_verifier_needs_a_key_and_a_positive_window() -> None:
    with pytest.raises(ConfigError, match="key"):
        Verifier(KeyRing())
    with pytest.raises(ConfigError, match="window"):
        Verifier(RING, window=timedelta(0))


# --- keys ---------------------------------------------------------------------------------------


def test_key_file_forms_comments_and_order(tmp_path: Path) -> None:
    single = tmp_path / "single.key"
    single.write_text(f"{SECRET}\n")
    ring = KeyRing.read(single)
    assert ring.key_ids == ("default",) and ring.keys[0].secret.value == SECRET.encode()
    rotation = tmp_path / "ring.key"
    rotation.write_text(f"# new key first\nk2:{SECRET}-new\n\nk1 : {SECRET}\n")
    ring = KeyRing.read(rotation)
    assert ring.key_ids == ("k2", "k1") and ring.signer is not None
    assert ring.signer.key_id == "k2" and ring.secret("k1") == Secret(SECRET.encode())


def test_the_environment_key_signs_and_the_file_adds_keys(tmp_path: Path) -> None:
    path = tmp_path / "ring.key"
    path.write_text(f"ops:{SECRET}\nevaluator:another-secret-0123456789\n")
    env = {
        "CANARY_CONTROL_KEY": "evaluator:another-secret-0123456789",
        "CANARY_CONTROL_KEY_FILE": str(path),
    }
    settings = Settings.from_env(env)
    assert settings.control_keys.key_ids == ("evaluator", "ops")
    assert Settings.from_env({}).control_keys == KeyRing()
    assert not Settings.from_env({}).control_keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("short", "shorter than 16 bytes"),
        ("ops:short", "shorter than 16 bytes"),
        (f"bad id!:{SECRET}", "a key id must be"),
        (f"ops:{SECRET}\nops:{SECRET}-other", "given twice"),
    ],
)
def test_bad_keys_are_config_errors_that_never_show_the_secret(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        KeyRing.parse(text)
    assert "short" not in str(info.value).replace("shorter", "") and SECRET not in str(info.value)


def test_empty_or_missing_key_files_are_config_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        KeyRing.read(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        KeyRing.read(tmp_path / "missing.key")


def test_secrets_never_appear_in_reprs() -> None:
    settings = Settings.from_env({"CANARY_CONTROL_KEY": f"ops:{SECRET}"})
    shown = [repr(settings), str(settings), repr(settings.control_keys), repr(OPS), str(OPS)]
    assert all(SECRET not in text for text in shown)
    assert "ops" in repr(settings.control_keys) and "redacted" in repr(OPS)


def test_without_keys_the_controller_says_once_that_commands_are_not_authenticated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="model_canary.agents.router.command_guard"):
        unkeyed = CommandGuard(Settings(), "canary.control", "test-guard")
        keyed = CommandGuard(Settings(control_keys=RING), "canary.control", "test-guard")
    assert unkeyed.verifier is None and unkeyed.catch_up() == 0  # no broker needed
    assert keyed.verifier is not None and keyed.verifier.ring is RING
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NOT authenticated" in warnings[0]
    assert "('ops', 'evaluator')" in caplog.text and SECRET not in caplog.text


# --- who a key may sign for ---------------------------------------------------------------------


def test_a_key_signs_only_for_its_principals() -> None:
    ring = KeyRing.parse(f"ops:{SECRET}\nalice-key[alice,bob]:{SECRET}-a\nevaluator:{SECRET}-e")
    ops, alice, _ = ring.keys
    v = Verifier(ring)
    # The default (a key file from before principals): a key signs as its own id.
    assert _reason(v, sign(_cmd(command_id="1", issued_by="ops"), ops)) is None
    assert _reason(v, sign(_cmd(command_id="2", issued_by="operator"), ops)) == "wrong-issuer"
    assert _reason(v, sign(_cmd(command_id="3", issued_by="evaluator"), ops)) == "wrong-issuer"
    assert _reason(v, sign(_cmd(command_id="4", issued_by="bob"), alice)) is None
    assert _reason(v, sign(_cmd(command_id="5", issued_by="alice-key"), alice)) == "wrong-issuer"
    assert (ops.principal, alice.principal) == ("ops", "alice")
    rejection = v.verify(sign(_cmd(command_id="6", issued_by="mallory"), alice), T0)
    assert rejection is not None and "signs for alice, bob, not for 'mallory'" in rejection.detail


def test_principal_lists_are_checked_and_never_show_the_secret() -> None:
    for bad in (f"ops[]:{SECRET}", f"ops[a b]:{SECRET}", f"ops[a,]:{SECRET}"):
        with pytest.raises(ConfigError, match="principals") as info:
            KeyRing.parse(bad)
        assert SECRET not in str(info.value)
    assert KeyRing.parse(f"ops[*]:{SECRET}").keys[0].may_sign_for("anyone")


def test_decisions_are_signed_like_commands_and_only_the_evaluators_key_may() -> None:
    decision = Decision(
        decision_id="d1", model="iris", rollout_id="ro1", outcome=Outcome.HOLD,
        reason="too-short: 3s of 300s", decided_at=T0,
    )  # fmt: skip
    example = EXAMPLES[Decision]
    ring = KeyRing.parse(f"evaluator:{SECRET}\nops:{SECRET}-o")
    evaluator, ops = ring.keys
    v = Verifier(ring)
    codec = codec_for(Decision)
    for record in (decision, example):
        signed = sign(record, evaluator)
        assert v.authentic(codec.decode(codec.encode(signed))) is None  # nested evidence too
        assert canonical_bytes(signed).startswith(b"model-canary/decision/v1\n")
    assert v.authentic(decision).reason == "unsigned"  # type: ignore[union-attr]
    assert v.authentic(sign(decision, ops)).reason == "wrong-issuer"  # type: ignore[union-attr]
    forged = dataclasses.replace(sign(example, evaluator), weight_bp=10_000)
    assert v.authentic(forged).reason == "bad-signature"  # type: ignore[union-attr]
    # A command's signature is no decision's: the domains differ.
    assert canonical_bytes(_cmd()) != canonical_bytes(decision)
