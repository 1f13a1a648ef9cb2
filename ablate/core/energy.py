"""The price tag: wall seconds, CPU seconds, energy and CO2e of a block of work.

How to use:
    with Meter(cfg.energy, device) as meter:
        ...work...
    meter.result  # {"wall_s", "cpu_s", "energy_kwh", "co2_kg", "energy_method", "energy_assumptions"}

codecarbon's OfflineEmissionsTracker (process mode, quiet, no network) does the
measuring where it can: NVML's energy counter on NVIDIA GPUs, RAPL on CPUs that
expose it. On VMs without RAPL it estimates CPU power from its TDP table and the
process's load; the method string says which happened. The "estimate" backend
(and the fallback when codecarbon cannot start) is process CPU time × watts per
thread + RAM watts × wall time, times PUE, times a stated grid intensity.

A run resumed after a crash pays for the sessions before it too: `SessionClock` keeps
the seconds spent so far (saved with each checkpoint), and `with_earlier_sessions` adds
them to the last session's price tag.
"""

from __future__ import annotations

import logging
import os
import time

from ablate.core.config import EnergyConfig

NO_COST = {"wall_s": 0.0, "cpu_s": 0.0, "energy_kwh": 0.0, "co2_kg": 0.0}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Meter:
    def __init__(self, cfg: EnergyConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = device
        self.tracker = None
        self.result: dict = {}

    def __enter__(self) -> "Meter":
        self._wall0, self._cpu0 = time.perf_counter(), _cpu_seconds()
        if self.cfg.backend == "codecarbon":
            self.tracker = self._start_codecarbon()
        return self

    def _start_codecarbon(self):
        # codecarbon logs at INFO before it reads log_level, and warns on every
        # concurrent tracker; its failures reach us as exceptions, so mute the logger.
        logging.getLogger("codecarbon").disabled = True
        try:
            from codecarbon import OfflineEmissionsTracker

            kwargs = dict(
                country_iso_code=self.cfg.country_iso_code, tracking_mode="process", output_methods=[],
                log_level="critical", measure_power_secs=self.cfg.measure_power_secs,
                pue=self.cfg.pue, allow_multiple_runs=True)
            if self.cfg.grid_g_co2e_per_kwh is not None:
                kwargs["force_carbon_intensity_g_co2e_kwh"] = self.cfg.grid_g_co2e_per_kwh
            if self.cfg.cpu_watts is not None:
                kwargs["force_cpu_power"] = self.cfg.cpu_watts
            if self.cfg.ram_watts is not None:
                kwargs["force_ram_power"] = self.cfg.ram_watts
            tracker = OfflineEmissionsTracker(**kwargs)
            tracker.start()
            return tracker
        except Exception as exc:  # codecarbon failing must not cost a training run
            self._cc_error = f"{type(exc).__name__}: {exc}"
            return None

    def __exit__(self, exc_type, exc, tb) -> None:
        wall = time.perf_counter() - self._wall0
        cpu = _cpu_seconds() - self._cpu0
        self.result = {"wall_s": wall, "cpu_s": cpu}
        data = None
        if self.tracker is not None:
            try:
                self.tracker.stop()
                data = self.tracker.final_emissions_data
            except Exception as err:
                self._cc_error = f"{type(err).__name__}: {err}"
        if data is not None:
            self.result.update(self._from_codecarbon(data))
        else:
            self.result.update(self._estimate(wall, cpu))

    def _from_codecarbon(self, data) -> dict:
        hardware = [str(h) for h in getattr(self.tracker, "_conf", {}).get("hardware", [])]
        if any("GPU" in h for h in hardware):
            method = "codecarbon: GPU energy from NVML counter; CPU/RAM as listed"
        elif any("RAPL" in h for h in hardware):
            method = "codecarbon: measured RAPL counter"
        else:
            method = "codecarbon: estimate (no RAPL/NVML): CPU TDP x process load, RAM watts x time"
        return {
            "energy_kwh": float(data.energy_consumed), "co2_kg": float(data.emissions),
            "energy_method": method,
            "energy_assumptions": {
                "backend": "codecarbon", "hardware": hardware, "country_iso_code": data.country_iso_code,
                "grid_g_co2e_per_kwh": self.cfg.grid_g_co2e_per_kwh or "codecarbon country mix",
                "cpu_power_w": float(data.cpu_power), "ram_power_w": float(data.ram_power),
                "gpu_power_w": float(data.gpu_power), "pue": float(data.pue),
                "cpu_model": data.cpu_model, "gpu_model": data.gpu_model, "tracking_mode": data.tracking_mode,
                "measure_power_secs": self.cfg.measure_power_secs, "codecarbon": data.codecarbon_version,
            },
        }

    def _estimate(self, wall: float, cpu: float) -> dict:
        ram_w = self.cfg.ram_watts if self.cfg.ram_watts is not None else 3.0
        grid = self.cfg.grid_g_co2e_per_kwh or self.cfg.fallback_g_co2e_per_kwh
        joules = (cpu * self.cfg.watts_per_cpu_thread + wall * ram_w) * self.cfg.pue
        kwh = joules / 3.6e6
        why = "configured" if self.cfg.backend == "estimate" else f"codecarbon unavailable ({getattr(self, '_cc_error', '?')})"
        return {
            "energy_kwh": kwh, "co2_kg": kwh * grid / 1000.0,
            "energy_method": f"estimate: process CPU seconds x {self.cfg.watts_per_cpu_thread} W/thread "
                             f"+ RAM {ram_w} W x wall ({why})",
            "energy_assumptions": {
                "backend": "estimate", "watts_per_cpu_thread": self.cfg.watts_per_cpu_thread,
                "ram_watts": ram_w, "pue": self.cfg.pue, "grid_g_co2e_per_kwh": grid,
                "cpu_s": cpu, "wall_s": wall, "device": self.device,
            },
        }


class SessionClock:
    """Seconds spent by a training run so far: the earlier sessions' (`carried`) plus this one's."""

    def __init__(self, carried: dict | None = None):
        self.carried = dict(carried or NO_COST)
        self._wall0, self._cpu0 = time.perf_counter(), _process_cpu_s()

    def so_far(self) -> dict:
        """What a checkpoint stores, so a resumed run still pays for the sessions before it."""
        return dict(self.carried, wall_s=self.carried["wall_s"] + time.perf_counter() - self._wall0,
                    cpu_s=self.carried["cpu_s"] + _process_cpu_s() - self._cpu0)


def with_earlier_sessions(cost: dict, carried: dict) -> dict:
    """The last session's price tag (`Meter.result`) plus the seconds, energy and CO2e of the ones before it."""
    carried = dict(carried)
    if carried["cpu_s"] > 0 and not carried["energy_kwh"] and cost["cpu_s"] > 0:
        # Earlier sessions (before a crash) were not metered: charge them at this session's
        # energy per CPU second, and say so.
        scale = carried["cpu_s"] / cost["cpu_s"]
        carried["energy_kwh"], carried["co2_kg"] = cost["energy_kwh"] * scale, cost["co2_kg"] * scale
        cost = dict(cost, energy_method=cost["energy_method"] + "; earlier interrupted sessions scaled by CPU time")
    return dict(cost, **{key: cost[key] + carried[key] for key in NO_COST})
