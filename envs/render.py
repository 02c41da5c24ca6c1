"""Drawing the city for ``render_mode="rgb_array"`` / ``"human"`` (matplotlib, headless-safe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gigdispatch.envs.core.types import (
    ACC_SUSPENDED,
    ORDER_ASSIGNED,
    ORDER_OFFERED,
    ORDER_OPEN,
    PH_DRIVING,
    PH_IDLE,
    PH_OFFLINE,
    PH_SERVICE,
)

if TYPE_CHECKING:
    from gigdispatch.envs.core.sim import Simulator

DRIVER_COLOURS = {
    "idle": "#2ca02c",
    "to pickup / repositioning": "#1f77b4",
    "carrying": "#ff7f0e",
    "at stop": "#9467bd",
    "suspended": "#d62728",
}
ORDER_COLOURS = {"on track": "#2ca02c", "at risk": "#ff7f0e", "late": "#d62728"}


class CityRenderer:
    """Draws nodes, drivers coloured by status, pending orders coloured by SLA state, and a few KPIs."""

    def __init__(self, sim: Simulator, title: str = "gigdispatch", size_px: int = 640) -> None:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg",) and not _has_display():
            matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        self.sim = sim
        self.title = title
        dpi = 100
        self.fig, self.ax = plt.subplots(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
        self._plt = plt

    def draw(self) -> np.ndarray:
        sim, ax = self.sim, self.ax
        dr, od = sim.drivers, sim.orders
        ax.clear()
        xy = sim.city.node_xy / 1000.0
        ax.scatter(xy[:, 0], xy[:, 1], s=2, c="#cccccc", zorder=0)
        pos = sim.driver_xy() / 1000.0
        carrying = dr.load > 0
        status = np.full(dr.n, "", dtype=object)
        status[dr.phase == PH_IDLE] = "idle"
        status[dr.phase == PH_DRIVING] = "to pickup / repositioning"
        status[(dr.phase == PH_DRIVING) & carrying] = "carrying"
        status[dr.phase == PH_SERVICE] = "at stop"
        status[(dr.account == ACC_SUSPENDED) & (dr.phase != PH_OFFLINE)] = "suspended"
        for name, colour in DRIVER_COLOURS.items():
            m = status == name
            if m.any():
                ax.scatter(
                    pos[m, 0], pos[m, 1], s=14, c=colour, marker="o", label=f"driver: {name} ({int(m.sum())})", zorder=2
                )
        sl = sim.active_orders()
        idx = sl.start + np.flatnonzero(np.isin(od.status[sl], (ORDER_OPEN, ORDER_OFFERED, ORDER_ASSIGNED)))
        if idx.size:
            trip = sim.city.travel_s(od.pickup[idx], od.dropoff[idx])
            eta = np.maximum(sim.t, od.t_ready[idx]) + trip
            state = np.where(sim.t > od.deadline[idx], "late", np.where(eta > od.deadline[idx], "at risk", "on track"))
            pxy = sim.city.node_xy[od.pickup[idx]] / 1000.0
            for name, colour in ORDER_COLOURS.items():
                m = state == name
                if m.any():
                    ax.scatter(
                        pxy[m, 0],
                        pxy[m, 1],
                        s=22,
                        c=colour,
                        marker="s",
                        edgecolors="k",
                        linewidths=0.3,
                        label=f"order: {name} ({int(m.sum())})",
                        zorder=3,
                    )
        from gigdispatch.envs.core.kpis import compute_kpis

        k = compute_kpis(sim)
        h, m = divmod(int(sim.t // 60), 60)
        on_time = "n/a" if k["on_time_rate"] != k["on_time_rate"] else f"{k['on_time_rate']:.1%}"  # NaN: none yet
        ax.set_title(
            f"{self.title} — {sim.scenario.name} — {h:02d}:{m:02d}\n"
            f"delivered {k['orders_delivered']}  cancelled {k['orders_cancelled']}  on-time {on_time}  "
            f"margin {k['platform_margin']:,.0f} EUR",
            fontsize=8,
        )
        ax.set_xlabel("km")
        ax.set_ylabel("km")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=6, framealpha=0.8)
        self.fig.tight_layout()
        canvas = self.fig.canvas
        canvas.draw()
        assert hasattr(canvas, "buffer_rgba")  # Agg and the interactive backends built on it
        buf = np.asarray(canvas.buffer_rgba())
        return buf[..., :3].copy()

    def show(self) -> None:
        self._plt.pause(0.001)

    def close(self) -> None:
        self._plt.close(self.fig)


class RenderMixin:
    """``render()`` and ``close()`` for an environment whose simulator is ``_render_sim()``."""

    render_mode: str | None
    _viewer: CityRenderer | None = None
    _render_title = "gigdispatch"

    def _render_sim(self) -> Simulator:
        raise NotImplementedError

    def render(self) -> np.ndarray | None:
        """An RGB frame (``"rgb_array"``), or draw on screen (``"human"``, returns None)."""
        if self.render_mode is None:
            return None
        if self._viewer is None:
            self._viewer = CityRenderer(self._render_sim(), title=self._render_title)
        frame = self._viewer.draw()
        if self.render_mode == "human":
            self._viewer.show()
            return None
        return frame

    def close(self) -> None:
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
