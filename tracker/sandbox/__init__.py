"""Faithful fake servers of the SMS vendors, one per registered vendor, with knobs and ground
truth (docs/vendors.md#the-sandbox).

    sandbox = Sandbox(knobs=Knobs(time_scale=0.01), seed=7)
    await sandbox.start()                  # loopback, any free port -> sandbox.url
    sandbox.base_url("engagespark")        # http://127.0.0.1:PORT/engagespark
    calls = await send_many(sandbox, "engagespark", ["639171234567"], bulk=True)
    sandbox.truth()                        # {(vendor, vendor_ref, recipient|None): {...}}
    await sandbox.stop()
"""
from tracker.sandbox.client import SendCall, SendError, send_many
from tracker.sandbox.knobs import Knobs
from tracker.sandbox.server import VENDORS, Sandbox

__all__ = ["Knobs", "Sandbox", "SendCall", "SendError", "VENDORS", "send_many"]
