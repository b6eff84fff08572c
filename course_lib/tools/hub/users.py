"""The study group's accounts on the hub's machine: ``make hub-users USERS="ana ben" LEADERS="lea"``.

The hub (``jupyterhub_config.py`` beside this file) lets in the machine's accounts in the groups ``course-learners``
and ``course-leaders``, with their own passwords (PAM). This creates such accounts with the operating system's own
tools (``groupadd``, ``useradd``, ``chpasswd``; run as root), gives each a random password, prints the list once for
the leader to hand out, and stores no password anywhere. An account that already exists is only added to the group
(its password is left as it is). ``remove`` deletes accounts this tool made, with their homes.

    python -m course_lib.tools.hub.users add ana ben --leaders lea
    python -m course_lib.tools.hub.users remove ana ben
"""
from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import subprocess
import sys

LEARNERS, LEADERS = "course-learners", "course-leaders"
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")  # what useradd accepts without --badname


def _run(*command: str, stdin: str | None = None) -> None:
    subprocess.run(command, input=stdin, text=True, check=True, capture_output=True)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def check_names(names: list[str]) -> None:
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise ValueError(f"not usable as account names: {bad}; use lower-case letters, digits, '-' and '_', "
                         "starting with a letter")


def add(names: list[str], group: str) -> dict[str, str | None]:
    """Create each account (home mode 700) in ``group`` with a random password; return {name: password or None
    for an account that existed}."""
    check_names(names)
    _run("groupadd", "-f", group)
    passwords = {}
    for name in names:
        if _exists(name):
            _run("usermod", "-a", "-G", group, name)
            passwords[name] = None
            continue
        _run("useradd", "--create-home", "--shell", "/bin/bash", "--groups", group, name)
        os.chmod(pwd.getpwnam(name).pw_dir, 0o700)
        passwords[name] = secrets.token_urlsafe(9)
        _run("chpasswd", stdin=f"{name}:{passwords[name]}\n")
    return passwords


def remove(names: list[str]) -> list[str]:
    """Delete the accounts (and their homes) that are in the course's groups; return those deleted."""
    check_names(names)
    removed = []
    for name in names:
        if not _exists(name):
            continue
        groups = subprocess.run(["id", "-nG", name], text=True, capture_output=True, check=True).stdout.split()
        if not {LEARNERS, LEADERS} & set(groups):
            raise ValueError(f"{name} is not in {LEARNERS} or {LEADERS}: not an account of the course, left alone")
        _run("userdel", "--remove", name)
        removed.append(name)
    return removed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tools.hub.users", description=__doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="action", required=True)
    adding = sub.add_parser("add", help="create learner (and leader) accounts with random passwords")
    adding.add_argument("learners", nargs="*")
    adding.add_argument("--leaders", nargs="*", default=[])
    removing = sub.add_parser("remove", help="delete course accounts and their homes")
    removing.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: creating accounts needs root: sudo make hub-users ...", file=sys.stderr)
        return 2
    try:
        if args.action == "remove":
            print("removed:", " ".join(remove(args.names)) or "nobody")
            return 0
        made = {**add(args.learners, LEARNERS), **add(args.leaders, LEADERS)}
    except (ValueError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"error: {error} {detail}".strip(), file=sys.stderr)
        return 2
    print("account      password (shown once: hand it out, it is stored nowhere)")
    for name, password in made.items():
        print(f"{name:<12} {password or '(existed: password unchanged)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
