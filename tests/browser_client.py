"""Drive a Gradio app over raw HTTP the way its browser page does (queue/join + queue/data).

gradio_client refuses events marked private; a browser (or an attacker) does not. This client reads
``/config``, finds events by the label of the button that triggers them, keeps the current value of
every component like the page does, and posts events by fn_index over one HTTP session.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx


class BrowserSession:
    def __init__(self, base_url: str, query: str = "", login: tuple[str, str] | None = None,
                 cookies: httpx.Cookies | None = None):  # fmt: skip
        """``cookies``: the browser's cookie jar, kept across page loads (e.g. a proxy's route cookie)."""
        self.base = base_url.rstrip("/")
        self.http = httpx.Client(timeout=60, cookies=cookies)
        self.session_hash = secrets.token_hex(6)
        self.query = query
        if login is not None:  # Gradio's login form (the admin app): sets the access-token cookie
            r = self.http.post(f"{self.base}/login", data={"username": login[0], "password": login[1]})
            r.raise_for_status()
        response = self.http.get(f"{self.base}/config").raise_for_status()
        self.config = response.json()
        self.config_headers = response.headers  # e.g. which app server answered, behind a test proxy
        self.components = {c["id"]: c for c in self.config["components"]}
        self.values: dict[int, Any] = {cid: c.get("props", {}).get("value") for cid, c in self.components.items()}
        self.visible: dict[int, Any] = {cid: c.get("props", {}).get("visible", True) for cid, c in self.components.items()}

    # ------------------------------------------------------------------ lookups
    def find(self, label: str | None = None, type: str | None = None, value: Any = None) -> list[int]:
        out = []
        for cid, c in self.components.items():
            props = c.get("props", {})
            if type and c.get("type") != type:
                continue
            if label is not None and props.get("label") != label and props.get("value") != label:
                continue
            if value is not None and props.get("value") != value:
                continue
            out.append(cid)
        return out

    def with_class(self, elem_class: str) -> list[int]:
        """Components carrying ``elem_class`` (e.g. the page fields ``p2p-shown``, ``p2p-active``)."""
        return [cid for cid, c in self.components.items() if elem_class in (c.get("props", {}).get("elem_classes") or [])]

    def one(self, **kw: Any) -> int:
        found = self.find(**kw)
        assert len(found) == 1, f"{kw} matched {found}"
        return found[0]

    def event_for(self, component_id: int, trigger: str = "click") -> int:
        for fn_index, dep in enumerate(self.config["dependencies"]):
            if [component_id, trigger] in [list(t) for t in dep["targets"]]:
                return dep.get("id", fn_index)
        raise KeyError(f"no {trigger} event on component {component_id}")

    def dependency(self, fn_index: int) -> dict:
        for i, dep in enumerate(self.config["dependencies"]):
            if dep.get("id", i) == fn_index:
                return dep
        raise KeyError(fn_index)

    # ------------------------------------------------------------------ events
    def set(self, component_id: int, value: Any) -> None:
        self.values[component_id] = value

    def trigger(self, component_id: int, trigger: str = "click", data: list | None = None) -> dict:
        """Run the event; apply its outputs to the page state; return {component_id: output}."""
        fn_index = self.event_for(component_id, trigger)
        dep = self.dependency(fn_index)
        payload_data = data if data is not None else [self.values.get(i) for i in dep["inputs"]]
        results = self.call(fn_index, payload_data, trigger_id=component_id)
        # events chained with .then() run next, as in the page (e.g. the arena's Generate: button off, trial, on)
        done = [fn_index]
        while done:
            after = done.pop(0)
            for i, nxt in enumerate(self.config["dependencies"]):
                if nxt.get("trigger_after") == after:
                    nid = nxt.get("id", i)
                    results |= self.call(nid, [self.values.get(c) for c in nxt["inputs"]], trigger_id=component_id)
                    done.append(nid)
        return results

    def call(self, fn_index: int, data: list, trigger_id: int | None = None) -> dict:
        dep = self.dependency(fn_index)
        body = {
            "data": data,
            "fn_index": fn_index,
            "session_hash": self.session_hash,
            "event_data": None,
            "trigger_id": trigger_id,
        }
        url = f"{self.base}/gradio_api/queue/join"
        if self.query:
            url += f"?{self.query}"
        self.last_body = body
        self.http.post(url, json=body).raise_for_status()
        output = None
        with self.http.stream("GET", f"{self.base}/gradio_api/queue/data", params={"session_hash": self.session_hash}) as r:
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "unexpected_error":  # what the page shows as an error pop-up
                    raise RuntimeError(f"unexpected_error: {msg.get('message')}")
                if msg.get("msg") == "process_completed":
                    if not msg.get("success", True):
                        raise RuntimeError(f"event failed: {msg.get('output')}")
                    output = msg["output"]
                    break
        assert output is not None, "no result"
        results = {}
        for cid, value in zip(dep["outputs"], output["data"]):
            results[cid] = value
            if isinstance(value, dict) and value.get("__type__") == "update":
                if "value" in value:
                    self.values[cid] = value["value"]
                if "visible" in value:
                    self.visible[cid] = value["visible"]
            else:
                self.values[cid] = value
        return results

    def text_of(self, component_id: int) -> str:
        v = self.values.get(component_id)
        return v if isinstance(v, str) else json.dumps(v)

    def close(self) -> None:
        self.http.close()
