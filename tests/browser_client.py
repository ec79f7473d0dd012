"""Drive a Gradio app over raw HTTP the way its browser page does (queue/join + queue/data).

gradio_client refuses events marked private; a browser (or an attacker) does not. This client reads
``/config``, finds components by their declared element id (p2p_app/ui/page.py: never by label or position) and
events by the component that triggers them, keeps the current value of every component like the page does, and
posts events by fn_index over one HTTP session. Every test and benchmark that drives the page goes through it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx

from p2p_app.ui.page import ADMIN, ARENA, LANDING, Css, Field, Markup, PanelIds, ScriptCss, study  # noqa: F401


# ---------------------------------------------------------------------------------- in a real browser (Playwright)
# The same declared ids as CSS selectors. Gradio puts ``elem_id`` on a button itself, on the block around any other
# component, and ``<elem_id>-button`` on a tab's button.


def sel(elem_id: str) -> str:
    """The element with the declared id (a button; the block of anything else)."""
    return f"#{elem_id}"


def input_of(elem_id: str) -> str:
    """The text field (input or textarea) inside a textbox's block."""
    return f"#{elem_id} :is(input, textarea)"


def any_study(role: str, n: int = 16) -> str:
    """The ``role`` part (``"submit"``, ``"who"`` …) of whichever study's tab shows it: add ``:visible``."""
    return ":is(" + ", ".join(sel(getattr(study(i), role)) for i in range(n)) + ")"


def panel_of(locator) -> PanelIds:
    """The declared ids of the panel a Playwright ``locator`` (a ``.p2p-panel`` column) is."""
    return PanelIds(locator.get_attribute("id"))


def tool(attribute: str, value: str) -> str:
    """A control of the viewer toolbar (``page.Markup``), e.g. ``tool(Markup.ZOOM, "in")``: add ``:visible``."""
    return f"[{attribute}={value}]"


def tab_button(elem_id: str) -> str:
    """The button that opens the tab with the declared id."""
    return f"#{elem_id}-button"


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
        self.by_elem_id = {c["props"]["elem_id"]: cid for cid, c in self.components.items()
                           if (c.get("props") or {}).get("elem_id")}  # fmt: skip

    # ------------------------------------------------------------------ lookups (by declared id: p2p_app/ui/page.py)
    def has(self, elem_id: str) -> bool:
        return elem_id in self.by_elem_id

    def by_id(self, elem_id: str) -> int:
        """The component with the declared element id ``elem_id`` (e.g. ``ARENA.submit``, ``study(0).signin``)."""
        assert elem_id in self.by_elem_id, f"no component with elem_id {elem_id!r} in the page"
        return self.by_elem_id[elem_id]

    def panels(self, screen: Any, group: str = "") -> list[PanelIds]:
        """The declared panels of ``screen`` (``ARENA``, ``study(i)``) the page has, left to right; ``group``: the
        arena's judgement (``"scores"``, ``"ranking"``)."""
        out = []
        while self.has((p := screen.panel(len(out), group) if group else screen.panel(len(out))).column):
            out.append(p)
        return out

    def images(self, screen: Any, group: str = "") -> list[int]:
        return [self.by_id(p.image) for p in self.panels(screen, group)]

    def answers(self, screen: Any, key: str, group: str = "") -> list[int]:
        """Per panel, the input of answer ``key`` (a question key, ``rank_<key>``, ``cant_judge`` or ``comment``)."""
        part = (lambda p: getattr(p, key)) if key in ("cant_judge", "comment") else (lambda p: p.answer(key))
        return [self.by_id(part(p)) for p in self.panels(screen, group) if self.has(part(p))]

    def under(self, screen: Any) -> list[int]:
        """Every component with a declared id of ``screen`` (``ARENA``, ``study(i)``, ``ADMIN``), panels included."""
        prefix = f"{screen.prefix}-"
        return sorted(cid for elem_id, cid in self.by_elem_id.items() if elem_id.startswith(prefix))

    def with_class(self, elem_class: str) -> list[int]:
        """Components carrying ``elem_class`` (a declared class: ``page.Css``, ``page.Field``)."""
        return [cid for cid, c in self.components.items() if elem_class in (c.get("props", {}).get("elem_classes") or [])]

    def of_type(self, type: str, among: Any = None) -> list[int]:
        """Components of a Gradio type (``"image"``, ``"radio"``), optionally only those in ``among``."""
        return [c for c in (self.components if among is None else among) if self.components[c].get("type") == type]

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
