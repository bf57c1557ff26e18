"""The context tuner: ipywidgets over the same plain functions the headless run calls.

`plan.plan_view()` is what runbook 02 displays for its papermill parameters; `ContextTuner` lets a
person drag context/slots/KV type in JupyterLab and redraws the same table and plot. Widgets only
ever call `plan_view` (and `plan.adopt` for the button that hands the tuned values to 05), so a
headless run and an interactive one cannot disagree. Every callback works without a browser:
setting a widget's value or calling `button.click()` runs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as W

from .model import Architecture
from .plan import ENGINE_NAMES, PlanView, Setting, adopt, kv_types_for, plan_view
from .tables import code_html


class ContextTuner:
    """Sliders for context and slots, a KV-type dropdown, the plan they give, and a button that
    makes the tuned plan the one 05-serve launches."""

    def __init__(self, arch: Architecture, usable_bytes: int, context: int, slots: int = 1,
                 kv_type: str = "f16", ubatch: int = 2048, engine: str = "llamacpp",
                 options: dict[str, Any] | None = None, setting: Setting | None = None,
                 shown: PlanView | None = None, run_directory: str | Path | None = None):
        """`shown`: the plan the notebook has just displayed for these values; the tuner then starts
        from it without drawing its table and plot a second time (see for_view). `run_directory`: the run
        whose 02-plan record the button rewrites (default: the current run in the state file)."""
        self.run_directory = run_directory
        self.arch, self.usable_bytes, self.ubatch, self.engine = arch, usable_bytes, ubatch, engine
        self.options = dict(options or {})
        self.setting = setting
        top = max(arch.context_max // 1024 * 1024, 1024)
        self.context = W.IntSlider(value=min(max(context, 1024), top), min=1024, max=top, step=1024,
                                   description="context", continuous_update=False)
        self.slots = W.IntSlider(value=slots, min=1, max=16, description="slots", continuous_update=False)
        self.kv_type = W.Dropdown(options=list(kv_types_for(arch, engine)), value=kv_type,   # the ones llama.cpp takes
                                  description="KV type")
        self.adopt_button = W.Button(description="Use for 05-serve", icon="check",
                                     disabled=setting is None or not setting.adoptable,
                                     tooltip=(setting.why_not if setting and not setting.adoptable else
                                              "write these values to the state file: 05 serves them next"))
        self.status = W.HTML()
        self.out = W.Output()
        self.view: PlanView | None = None
        self.error: str | None = None
        self.adopted: dict[str, Any] | None = None
        self.record_path: Path | None = None   # the 02-plan record the button last rewrote
        self.draws = 0                 # table-and-plot renders in the widget
        for w in (self.context, self.slots, self.kv_type):
            w.observe(lambda _change: self.refresh(), names="value")
        self.adopt_button.on_click(lambda _b: self.use_for_serve())
        self.widget = W.VBox([W.HBox([self.context, self.slots, self.kv_type]),
                              W.HBox([self.adopt_button, self.status]), self.out])
        self.refresh(draw=shown is None, view=shown)

    @classmethod
    def for_view(cls, view: PlanView, run_directory: str | Path | None = None) -> "ContextTuner":
        """A tuner starting from what runbook 02 just planned (`plan.run`); its button rewrites 02's record
        in `run_directory` (the run 02 writes to)."""
        # The notebook displayed this plan's table and plot just above; drawing them again inside the
        # widget doubled every executed record, and on one host (the gVisor GPU machine) a widget
        # output of more than 64 KiB stalled papermill for good. They are drawn on the first change.
        p, s = view.plan, view.setting
        return cls(p.arch, p.usable_bytes, p.context, p.slots, p.kv_type, p.ubatch, p.engine, view.options, s,
                   shown=view, run_directory=run_directory)

    def refresh(self, draw: bool = True, view: PlanView | None = None) -> None:
        try:
            self.view = view or plan_view(self.arch, self.context.value, self.slots.value, self.kv_type.value,
                                          self.ubatch, self.usable_bytes, engine=self.engine, **self.options)
            self.view.setting = self.setting
            self.error = None
        except ValueError as e:        # e.g. too many slots for this context: shown, not raised
            self.error = str(e)
        self.adopt_button.disabled = (self.error is not None or self.setting is None or not self.setting.adoptable)
        p = self.view.plan if self.view and not self.error else None
        self.status.value = (f"<b>{code_html(self.error)}</b>" if self.error else
                             f"{ENGINE_NAMES[self.engine]}: <b>{p.verdict}</b>, {p.total_bytes / 2**30:.2f} of "
                             f"{p.usable_bytes / 2**30:.1f} GiB; largest context that fits {self.view.largest}; "
                             f"{self.view.slot_line()}")
        self.out.clear_output(wait=True)
        if not draw:
            self.out.append_stdout("The table and plot above are this plan; move a control to redraw them here.\n")
            return
        self.draws += 1
        with self.out:
            if self.error:
                print(self.error)
            else:
                from IPython.display import display
                display(self.view.plan.table())
                display(self.view.figure())

    def use_for_serve(self) -> dict[str, Any] | None:
        """The button: write the tuned plan to the state file (what 05 launches next) and to this run's
        02-plan record (the earlier record is kept beside it), so the record says what 05 will serve."""
        if self.error or self.view is None or self.setting is None:
            return None
        self.adopted = adopt(self.view, self.setting)
        p = self.view.plan
        self.record_path = self._rewrite_record()
        self.status.value = (f"05-serve will launch context {p.context} × {p.slots} slot(s), KV {p.kv_type} "
                             f"({p.verdict})"
                             + (f"; record {self.record_path.name} updated" if self.record_path else ""))
        return self.adopted

    def _rewrite_record(self) -> Path | None:
        from . import records
        where = self.run_directory or records.load_state().get("run_dir")
        if not where:
            return None
        verdict, headline, results = self.view.record()
        try:
            return records.finish("02-plan", verdict, f"adopted in the tuner — {headline}",
                                  {**results, "adopted_in_tuner": True}, Path(where)).record_path
        except records.StepFailed:      # a plan that does not fit: recorded as such, shown in the status line
            return Path(where) / "02-plan.json"

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)
