"""Clients of one model server: chat models, llama.cpp wire calls, probes.

Nothing here holds a slot or picks a server; :mod:`endpoints.fleet` does, on top of these.
"""

from endpoints.clients._chat_models import (
    ChatModelFactory,
    constrain_to_json_schema,
    is_busy_error,
    is_endpoint_failure,
    json_schema_format,
    loop_http_client,
    make_chat_model,
)
from endpoints.clients._direct_chat import ainvoke_chat

__all__ = [
    "ChatModelFactory",
    "ainvoke_chat",
    "constrain_to_json_schema",
    "is_busy_error",
    "is_endpoint_failure",
    "json_schema_format",
    "loop_http_client",
    "make_chat_model",
]
