"""Service tokens through the real `airun token` command, and how `airun serve` binds.

Tokens: printed once, only a hash stored, listed without secrets, revoked by id or by user.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from airun_nb.service import tokens
from airun_nb.store.database import Store
from support import AIRUN
from support.service import free_port


def airun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AIRUN, *args], capture_output=True, text=True, timeout=120)


def test_a_token_is_printed_once_and_only_its_hash_is_stored(db: Path) -> None:
    made = airun("token", "create", "bob", "--db", str(db))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("airun_") and len(token) > 40
    Store.open(db).release()
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT token_id, token_hash, user_name, role FROM tokens").fetchall()
    con.close()
    assert stored == [
        (token.split("_")[1], hashlib.sha256(token.encode()).hexdigest(), "bob", "approver")
    ]
    assert token.encode() not in db.read_bytes()
    listed = airun("token", "list", "--db", str(db))
    assert listed.returncode == 0 and "bob" in listed.stdout and "live" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    found = tokens.authenticate(Store.open(db), token)
    assert found is not None and (found.user, found.role) == ("bob", "approver")


def test_revoke_by_id_or_by_user_and_one_line_errors(db: Path) -> None:
    first = airun("token", "create", "bob", "--db", str(db)).stdout.strip()
    second = airun("token", "create", "bob", "--role", "admin", "--db", str(db)).stdout.strip()
    carol = airun("token", "create", "carol", "--role", "viewer", "--db", str(db)).stdout.strip()
    by_id = airun("token", "revoke", first.split("_")[1], "--db", str(db))
    assert by_id.stdout.strip() == f"revoked {first.split('_')[1]}"
    store = Store.open(db)
    assert tokens.authenticate(store, first) is None
    assert tokens.authenticate(store, second) is not None
    assert airun("token", "revoke", "bob", "--db", str(db)).returncode == 0
    assert tokens.authenticate(store, second) is None
    assert tokens.authenticate(store, carol) is not None
    again = airun("token", "revoke", "bob", "--db", str(db))
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: no live token with id or user 'bob' in {db}"
    bad_role = airun("token", "create", "dave", "--role", "boss", "--db", str(db))
    assert bad_role.returncode == 1
    assert bad_role.stderr.strip() == "error: role 'boss' is not one of viewer, approver, admin"
    bad_user = airun("token", "create", "a b", "--db", str(db))
    assert bad_user.returncode == 1 and "is not valid" in bad_user.stderr
    assert "\n" not in bad_user.stderr.strip()


@pytest.mark.parametrize("token", ["", "airun_zz_short", "Bearer x", "airun_0000000a_" + "x" * 43])
def test_malformed_or_unknown_tokens_are_nobody(db: Path, token: str) -> None:
    airun("token", "create", "bob", "--db", str(db))
    assert tokens.authenticate(Store.open(db), token) is None


def test_serve_refuses_a_non_loopback_address_without_the_flag(db: Path) -> None:
    refused = airun("serve", "--db", str(db), "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: refusing to listen on 0.0.0.0: only loopback by default; pass --allow-remote "
        "(and put a TLS proxy in front)"
    )


def test_serve_on_all_addresses_with_the_flag_says_tls_is_expected(
    db: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [
                *AIRUN,
                "serve",
                "--db",
                str(db),
                "--host",
                "0.0.0.0",
                "--allow-remote",
                "--port",
                str(free_port()),
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ),
        )
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "TLS is expected in front of it" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_an_older_store_gains_the_tokens_table_when_opened(db: Path) -> None:
    Store.open(db).release()
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE tokens")
    con.execute("UPDATE airun_meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    made = airun("token", "create", "bob", "--db", str(db))
    assert made.returncode == 0, made.stderr
    assert tokens.authenticate(Store.open(db), made.stdout.strip()) is not None
