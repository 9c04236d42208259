"""`sage info`: the backend report as text (the bench is in queue_bench)."""

from __future__ import annotations

from .queue_adapter import get_queue_backend_info

__all__ = ["format_backend_info"]


def format_backend_info(info: dict | None = None) -> str:
    info = info or get_queue_backend_info()
    native = info["native_extension"]
    lines = [
        f"current backend : {info['current_backend']}  ({info['reason']})",
        f"install profile : {info['profile'] or 'none recorded'}",
        f"native module   : {'built, ' + native['path'] if native['available'] else 'not built'}",
        f"python          : {info['python']}",
        "backends:",
    ]
    for name, detail in info["details"].items():
        mark = "yes" if detail["available"] else "no "
        hint = "" if detail["available"] else f"  -> {detail['install_hint']}"
        lines.append(f"  {name:<13} available: {mark}  {detail['summary']}{hint}")
    lines.append("settings:")
    for key, setting in info["settings"].items():
        lines.append(f"  {key:<15} = {setting['value']!r:<12} from {setting['source']}")
    return "\n".join(lines)
