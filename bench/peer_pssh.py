"""parallel-ssh's row of ``inv bench peers``, run by the peers' Python:
``python peer_pssh.py SPEC.json``.

One ``ParallelSSHClient`` (libssh2) over every host of the spec, a connection a
host kept for both commands: ``true`` on every host, then ``true`` again. It
exits 1 if any host fails.
"""

from __future__ import annotations

import json
import sys

from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig


def main(spec_path: str) -> int:
    with open(spec_path) as spec_file:
        spec = json.load(spec_file)
    hosts = spec["hosts"]
    config = [
        # Only the key given: no agent, no ~/.ssh identities.
        HostConfig(
            alias=name,
            port=port,
            user=spec["user"],
            private_key=spec["key"],
            allow_agent=False,
            identity_auth=False,
        )
        for name, _, port in hosts
    ]
    client = ParallelSSHClient(
        [address for _, address, _ in hosts],
        host_config=config,
        pool_size=len(hosts),
        allow_agent=False,
        identity_auth=False,
    )
    for _ in range(2):
        output = client.run_command("true")  # a host that cannot connect raises here
        client.join(output)
        failed = [
            (out.alias, out.exit_code, out.exception)
            for out in output
            if out.exception is not None or out.exit_code != 0
        ]
        if failed:
            print(f"{len(failed)} hosts failed, e.g. {failed[0]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
