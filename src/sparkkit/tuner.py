"""The context tuner: ipywidgets over the same plain functions the headless run calls.

`plan_view()` is what runbook 02 displays for its papermill parameters; `ContextTuner` lets a
person drag context/slots/KV type in JupyterLab and redraws the same table and plot. Widgets
only ever call `plan_view`, so a headless run and an interactive one cannot disagree.
"""
from __future__ import annotations

import ipywidgets as W

from .model import Architecture
from .plan import KV_BYTES_PER_ELEMENT, PlanView, plan_view


class ContextTuner:
    """Sliders for context and slots, a KV-type dropdown, and the plan they give."""

    def __init__(self, arch: Architecture, usable_bytes: int, context: int, slots: int = 1,
                 kv_type: str = "f16", ubatch: int = 2048):
        self.arch, self.usable_bytes, self.ubatch = arch, usable_bytes, ubatch
        self.context = W.IntSlider(value=context, min=1024, max=arch.context_max, step=1024,
                                   description="context", continuous_update=False)
        self.slots = W.IntSlider(value=slots, min=1, max=8, description="slots", continuous_update=False)
        self.kv_type = W.Dropdown(options=list(KV_BYTES_PER_ELEMENT), value=kv_type, description="KV type")
        self.out = W.Output()
        self.view: PlanView | None = None
        self.error: str | None = None
        for w in (self.context, self.slots, self.kv_type):
            w.observe(lambda _change: self.refresh(), names="value")
        self.widget = W.VBox([W.HBox([self.context, self.slots, self.kv_type]), self.out])
        self.refresh()

    def refresh(self) -> None:
        try:
            self.view = plan_view(self.arch, self.context.value, self.slots.value, self.kv_type.value,
                                  self.ubatch, self.usable_bytes)
            self.error = None
        except ValueError as e:        # e.g. too many slots for this context
            self.error = str(e)
        self.out.clear_output(wait=True)
        with self.out:
            if self.error:
                print(self.error)
            else:
                from IPython.display import display
                display(self.view.plan.table())
                display(self.view.figure())

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)
