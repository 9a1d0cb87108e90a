"""The SMPP/HTTP side of optout-sidecar.

Importing the package honours ``OPTOUT_PURE_PYTHON=1`` before any hot-path
module (some of which live in `rules`) can be imported compiled: see
`gateway.speed`. The CLI imports `gateway` first, so `optout-sidecar`
always does.
"""

from gateway import speed as _speed

_speed.prefer_pure_python()
