"""A real SMTP server for tests (aiosmtpd), writing each message it accepts as one JSON line.

Python's `email` package decodes what the client encoded (RFC 2047 subjects, quoted-printable
or base64 bodies), so tests compare plain text. Usage:

    python3 smtp_sink.py HOST PORT OUT_FILE
"""

import asyncio
import email
import json
import sys
from email import policy

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        body = message.get_body(("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["from"]),
            "to": str(message["to"]),
            "subject": str(message["subject"]),
            "message_id": str(message["message-id"]),
            "body": body.get_content() if body is not None else "",
        }
        with open(self.out, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


async def main(host, port, out):
    controller = Controller(Recorder(out), hostname=host, port=port)
    controller.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
