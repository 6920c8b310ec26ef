"""What the control plane and its instances agree on, written once.

Header names, environment variable names, end states, instance statuses and the log lines
the control plane reads from an instance's output cross a process boundary: an instance
and the control plane that runs it must never disagree on them. Every layer (runtime,
backends, control, store) imports them from here, and this module imports only the
standard library, so a forking parent that imports the runtime stays cheap.
"""

from __future__ import annotations

from enum import StrEnum


class EndState(StrEnum):
    """How a session ended, in Pipecat Cloud's words."""

    COMPLETED = "completed"
    AGENT_ERROR = "agent_error"
    TERMINATED = "terminated"
    AGENT_START_TIMEOUT = "agent_start_timeout"
    ENDED_BEFORE_AGENT_START = "ended_before_agent_start"
    OUT_OF_MEMORY = "out_of_memory"


#: end states a runtime may log as a session's last line (the others are the control
#: plane's own: a session whose bot never started)
LOGGED_END_STATES = frozenset(
    {
        EndState.COMPLETED,
        EndState.AGENT_ERROR,
        EndState.TERMINATED,
        EndState.AGENT_START_TIMEOUT,
        EndState.OUT_OF_MEMORY,
    }
)
#: what ``endState=`` may filter sessions by: an end state, a live session, or none known
SESSION_FILTERS = frozenset({*(s.value for s in EndState), "active", "unknown"})

#: instance statuses after which no process is left to reattach to
TERMINAL_INSTANCE_STATUSES = frozenset({"stopped", "failed"})

# -- headers on the control plane's requests to an instance ----------------------------------

#: the session a request is for (Pipecat Cloud's name)
SESSION_ID_HEADER = "x-daily-session-id"
#: the session's duration cap in seconds
MAX_SESSION_HEADER = "x-pcc-max-session-seconds"
#: how the session came in (``/bot``: ``webrtc``, ...; ``/ws``: ``websocket`` for a plain
#: WebSocket client, absent for a phone carrier's stream, whose first messages tell)
TRANSPORT_TYPE_HEADER = "x-daily-transport-type"
#: the ``transport_type`` of a plain WebSocket session, as Pipecat's runner sets it
PLAIN_WEBSOCKET = "websocket"
#: a Daily session's room and the bot's meeting token
ROOM_URL_HEADER = "x-daily-room-url"
ROOM_TOKEN_HEADER = "x-daily-room-token"
#: the W3C trace context an instance's spans continue (tracing on)
TRACEPARENT_HEADER = "traceparent"
#: proves a request to an instance comes from its control plane
INSTANCE_TOKEN_HEADER = "x-cattery-instance-token"
#: on the answer to ``POST /bot``: the session's end state
END_STATE_HEADER = "x-cattery-end-state"

#: header namespaces only the platform sets on a request to an instance: a Session API
#: caller's headers in them are dropped
PLATFORM_HEADER_PREFIXES = ("x-daily-", "x-pcc-", "x-cattery-")
#: the runtime's own routes: the control plane's to call, never reachable through the
#: Session API (``/v1/public/{agent}/sessions/{id}/...``)
RUNTIME_ROUTES = frozenset({"bot", "ws", "readyz", "livez", "whatsapp"})

# -- headers callers send to the control plane ------------------------------------------------

#: how long a start may wait for an instance when the pool is full, in seconds
START_WAIT_HEADER = "x-cattery-start-wait"

# -- an instance's environment ----------------------------------------------------------------

#: the token the instance expects in ``INSTANCE_TOKEN_HEADER``
INSTANCE_TOKEN_ENV = "CATTERY_INSTANCE_TOKEN"
#: the instance exits once its first session has ended
ONE_SESSION_ENV = "CATTERY_ONE_SESSION"
#: comma-separated ICE URLs a WebRTC session falls back to
ICE_FALLBACK_URLS_ENV = "CATTERY_ICE_FALLBACK_URLS"
#: comma-separated feature keys an agent turns off (``OBSERVABILITY_OBSERVERS``)
DISABLED_FEATURES_ENV = "DISABLED_FEATURES"
#: OpenTelemetry's OTLP endpoint and protocol: set, an instance exports its spans there
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_PROTOCOL_ENV = "OTEL_EXPORTER_OTLP_PROTOCOL"
#: the memory fallback's budget in bytes (where cgroups can't limit memory): the instance's
#: address space may grow by this much beyond its size when it starts serving
MEMORY_LIMIT_ENV = "CATTERY_MEMORY_LIMIT_BYTES"
#: on a cluster: the address of the node an instance runs on (set by its node host)
NODE_ADDRESS_ENV = "CATTERY_NODE_ADDRESS"
#: environment variables of the control plane all start so; an instance inherits none
CONTROL_ENV_PREFIX = "CATTERY_"

# -- lines the control plane reads from an instance's output ----------------------------------

#: a session's bot is about to be called: its start time ends here
BOT_STARTED = "Starting bot session"
#: the last line of every session, followed by its end state
SESSION_ENDED = "Session ended with end state"
#: the line a session that ran out of memory leaves in its instance's log
OUT_OF_MEMORY_LINE = "Session ran out of memory: its agent profile's memory limit was reached"
#: startup timing and user-to-bot latency lines (``cattery.latency_lines`` has their format)
OBSERVABILITY_MARKER = "[pcc-observability]"

#: the Ray node label naming the region a cluster node belongs to (``ray start --labels
#: cattery-region=<key>``); a node without it belongs to the platform's default region
REGION_LABEL = "cattery-region"
#: the control plane's route where a new machine spends a region's enroll token
CLUSTER_JOIN_PATH = "/v1/cluster/join"
#: a file the instance's owner touches while the control plane still reaches it; once its
#: modification time is older than ``LEASE_SECONDS_ENV`` seconds the instance has lost its
#: lease (its node was fenced off) and ends its session and exits
LEASE_FILE_ENV = "CATTERY_LEASE_FILE"
LEASE_SECONDS_ENV = "CATTERY_LEASE_SECONDS"
