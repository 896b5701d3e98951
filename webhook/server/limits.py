"""Process limits that ``serve`` sets for itself before it listens.

Every connection holds a file descriptor. Many runtimes start a container with a soft limit
of 1,024 open files while the hard limit is far higher, and a server at the soft limit cannot
accept another connection: a thousand idle or hostile connections would lock out the API
server. The soft limit is ours to raise up to the hard one, so we do, once, in the parent;
workers inherit it.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("webhook.server")

# Linux refuses a soft limit above fs.nr_open (1,048,576 by default), even under an unlimited hard one.
CEILING = 1 << 20
FEW = 4096


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most ``CEILING``); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("raised the open-file limit from %d to %d, so connections cannot exhaust it", soft, target)
        soft = target
    if soft != resource.RLIM_INFINITY and soft < FEW:
        log.warning("only %d open files are allowed (hard limit %d): about that many connections at once "
                    "will lock out new clients, the API server among them", soft, hard)
    return soft
