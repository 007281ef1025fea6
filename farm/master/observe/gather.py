"""Ask every worker what the clients of its servers did (a `Control` of op CLIENTS, answered
by a `Reply` carrying farm.ipc.polling's summaries). Only when the API is asked: the
workers keep their statistics to themselves otherwise.
"""

from __future__ import annotations

import asyncio

from farm.ipc.messages import CLIENTS, Control, Reply
from farm.ipc.polling import ServerClients
from farm.master.supervision.slot import SlotState
from farm.master.supervision.supervisor import Supervisor

ASK_TIMEOUT_S = 2.0  # a worker that does not answer by then is left out (its servers unseen)


async def gather(supervisor: Supervisor) -> list[ServerClients]:
    """Every server that has had a client, with what its clients did."""
    asked = [
        supervisor.ask(
            slot, lambda request_id: Control(request_id=request_id, op=CLIENTS, servers=())
        )
        for slot in supervisor.slots
        if slot.state is SlotState.READY
    ]
    found: list[ServerClients] = []
    for future in asked:
        try:
            reply = await asyncio.wait_for(future, ASK_TIMEOUT_S)
        except TimeoutError:
            continue
        if isinstance(reply, Reply) and reply.ok:
            found.extend(reply.clients)
    return found
