"""``python -m svp.serve.swift_app --base_url URL [swift app arguments]``: ms-swift's own chat
page (``swift app``) on gradio 6.

ms-swift 4.6's ``swift app`` keeps its chat history as ``[user, bot]`` pairs, gradio 5's
"tuples" format. gradio 6 (pinned here: ``requirements/constraints.txt`` says why) removed
that format, so the stock command answers every message with "Data incompatible with
messages format". This entry runs ms-swift's unchanged page builder after wrapping the three
handlers that read and write the chat history: each gets pairs made from gradio's messages
and its pairs are turned back into messages (:func:`messages_to_pairs`,
:func:`pairs_to_messages`); the Chatbot itself is gradio's own. Where the installed gradio
still has the tuples format (< 6) nothing is wrapped. Everything else (the client, the
request, the streaming) is ms-swift's.
"""

from __future__ import annotations

import sys


def pairs_to_messages(pairs: list | None) -> list[dict]:
    """``[[user, bot], ...]`` (a file as ``(path,)`` in the user slot) -> messages."""
    out: list[dict] = []
    for user, bot in pairs or []:
        content = {"path": user[0]} if isinstance(user, tuple | list) else user
        out.append({"role": "user", "content": content})
        if bot is not None:
            out.append({"role": "assistant", "content": bot})
    return out


def messages_to_pairs(messages: list[dict] | None) -> list[list]:
    """gradio 6's preprocessed messages (content: a list of text and file parts) -> pairs."""
    pairs: list[list] = []
    for m in messages or []:
        texts = []
        for part in m.get("content") or []:
            if part.get("type") == "file":
                if m["role"] == "user":
                    pairs.append([(part["file"]["path"],), None])
            else:
                texts.append(str(part.get("text", "")))
        if m["role"] == "user" and texts:
            pairs.append(["".join(texts), None])
        elif m["role"] == "assistant" and pairs:
            pairs[-1][1] = "".join(texts)
    return pairs


def _speak_messages(ui) -> None:
    """Wrap the page builder's handlers (module globals it reads when it builds the page) so
    they take and give gradio 6's messages while keeping their pair logic."""

    def add_text(history, real_history, query):
        pairs, real_history, query = ui_add_text(messages_to_pairs(history), real_history, query)
        return pairs_to_messages(pairs), real_history, query

    def add_file(history, real_history, file):
        pairs, real_history = ui_add_file(messages_to_pairs(history), real_history, file)
        return pairs_to_messages(pairs), real_history

    async def model_chat(history, real_history, system, **kwargs):
        async for pairs, real in ui_model_chat(messages_to_pairs(history), real_history, system,
                                               **kwargs):
            yield pairs_to_messages(pairs), real

    ui_add_text, ui_add_file, ui_model_chat = ui.add_text, ui.add_file, ui.model_chat
    ui.add_text, ui.add_file, ui.model_chat = add_text, add_file, model_chat
    ui.svp_speaks_messages = True


def main(argv: list[str] | None = None) -> int:
    import gradio as gr
    from packaging import version
    from swift.pipelines.app import build_ui
    from swift.pipelines.app.app import app_main

    if version.parse(gr.__version__).major >= 6 and not getattr(build_ui, "svp_speaks_messages",
                                                                 False):
        _speak_messages(build_ui)
    app_main(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
