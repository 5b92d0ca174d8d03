"""A real headless GIMP 3 for the plug-in tests.

GIMP 3 on PATH is used as it is. Otherwise, as root on Debian (whose own GIMP is
2.10 without Python), a Debian 13 chroot with GIMP 3.0 is built once with
debootstrap and cached outside the repository; each run happens in a private
mount namespace (unshare), so its bind mounts vanish with the process.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("FAT_GIMP_CHROOT_CACHE", Path.home() / ".cache" / "face-attribute-transfer"))
CHROOT = CACHE / "gimp3-trixie"
MIRROR = os.environ.get("FAT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ["gimp", "gir1.2-gimp-3.0", "python3-gi", "gir1.2-gegl-0.4", "gir1.2-babl-0.1"]
# the real-window test (tests/test_gimp_window.py): a virtual screen, a window manager, keys, screenshots;
# added to an existing cached chroot on its next use (marker: GUI_MARKER)
GUI_PACKAGES = ["xvfb", "xauth", "openbox", "xdotool", "imagemagick", "x11-utils"]
GUI_MARKER = ".fat-gimp-gui-ready"
GUI_TOOLS = ("Xvfb", "xdotool", "import", "openbox")
PROJECT = Path(__file__).resolve().parents[1]
NOISE = ("cannot open display", "gimp_wire_read(): unexpected EOF", "Welcome to GIMP", "gimp_flush(): Broken pipe",
         "CRITICAL")


@dataclass
class Gimp:
    kind: str  # "path" or "chroot"
    executable: str
    root: Path | None = None

    def run(self, scratch: Path, batch_file: Path, env: dict[str, str], extra_paths: tuple[Path, ...] = (),
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a python-fu batch file in GIMP with a private config under `scratch`.

        In the chroot, the project, the host's Python, `scratch` and `extra_paths` are
        bind-mounted at their own paths, so the plug-in can start the engine's .venv.
        """
        gimp_cmd = [self.executable, "-i", "-n", "-d", "-f", f"--gimprc={self.gimprc(scratch)}",
                    "--batch-interpreter=python-fu-eval", "-b", f"exec(open({str(batch_file)!r}).read())", "--quit"]
        return self.run_command(scratch, gimp_cmd, env, extra_paths, timeout)

    def gimprc(self, scratch: Path, extra: str = "") -> Path:
        """A private GIMP config under `scratch` (home, XDG folders, gimprc naming the project's plug-in)."""
        home = scratch / "home"
        for sub in ("config", "cache", "data", "runtime"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(home / "runtime", 0o700)
        gimprc = home / "gimprc"
        if not gimprc.exists():  # written once: rewriting makes GIMP re-query every plug-in
            gimprc.write_text(f'(plug-in-path "${{gimp_dir}}/plug-ins:${{gimp_plug_in_dir}}/plug-ins:'
                              f'{PROJECT / "plugin"}")\n{extra}')
        return gimprc

    def run_command(self, scratch: Path, command: list[str], env: dict[str, str], extra_paths: tuple[Path, ...] = (),
                    timeout: float = 600) -> subprocess.CompletedProcess:
        """`command` with the private config's environment, inside the chroot when there is one."""
        home = scratch / "home"
        full_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data"),
            "XDG_RUNTIME_DIR": str(home / "runtime"), "LANG": "C.UTF-8", **env,
        }
        if self.kind == "path":
            return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout)
        binds = [PROJECT, Path(sys.base_prefix), scratch, *extra_paths]
        script = ["set -e"]
        for d in ("proc", "sys", "dev"):
            script.append(f"mount --bind /{d} {self.root}/{d}")
        for b in binds:
            script.append(f"mkdir -p {self.root}{b} && mount --bind {b} {self.root}{b}")
        script.append("exec chroot " + str(self.root) + " /usr/bin/env -i " +
                      " ".join(f"{k}={_q(v)}" for k, v in full_env.items()) + " " + " ".join(_q(a) for a in command))
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)],
                              capture_output=True, text=True, timeout=timeout)


def _q(s: str) -> str:
    return "'" + str(s).replace("'", "'\\''") + "'"


def _is_debian() -> bool:
    try:
        return "debian" in Path("/etc/os-release").read_text().lower()
    except OSError:
        return False


def _build_chroot(log) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "gimp3-trixie.tmp"
    if shutil.which("debootstrap") is None:
        log("installing debootstrap")
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not (tmp / "usr" / "bin" / "apt-get").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"debootstrap trixie into {tmp} (about 30 s)")
        subprocess.run(["debootstrap", "--variant=minbase", "trixie", str(tmp), MIRROR], check=True,
                       capture_output=True)
    log("installing GIMP 3 in the chroot (about 30 s)")
    _apt_install(tmp, PACKAGES)
    (tmp / ".fat-gimp-ready").write_text("ok\n")
    tmp.rename(CHROOT)


def find_gimp(log=print) -> tuple[Gimp | None, str]:
    """A runnable GIMP 3, or None and the reason why not."""
    exe = shutil.which("gimp-console-3.0") or shutil.which("gimp-console-3")
    if exe:
        return Gimp("path", exe), ""
    if os.geteuid() != 0:
        return None, "GIMP 3 is not on PATH and building a chroot needs root"
    if not _is_debian() or shutil.which("unshare") is None:
        return None, "GIMP 3 is not on PATH and this is not a Debian system (no chroot recipe)"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "gimp3-trixie.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (CHROOT / ".fat-gimp-ready").exists():
            try:
                _build_chroot(log)
            except (subprocess.CalledProcessError, OSError) as e:
                err = getattr(e, "stderr", b"") or b""
                return None, f"could not build the GIMP 3 chroot: {e} {err[-500:]!r}"
    return Gimp("chroot", "/usr/bin/gimp-console-3.0", CHROOT), ""


def _apt_install(root: Path, packages: list[str]) -> None:
    install = (f"set -e; for d in proc sys dev; do mount --bind /$d {root}/$d; done; "
               f"chroot {root} /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y "
               f"-qq --no-install-recommends {' '.join(packages)} && apt-get clean'")
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", install], check=True,
                   capture_output=True)


def find_gui_gimp(log=print) -> tuple[Gimp | None, str]:
    """A GIMP 3 that can open real windows on a virtual screen (Xvfb, openbox, xdotool, ImageMagick's import):
    on PATH with those tools, or the chroot, where they are installed once (idempotent, marker file)."""
    gimp, reason = find_gimp(log)
    if gimp is None:
        return None, reason
    if gimp.kind == "path":
        missing = [t for t in (*GUI_TOOLS, "gimp-3.0") if shutil.which(t) is None]
        if missing:
            return None, f"the real-window test needs {', '.join(missing)} on PATH"
        return Gimp("path", shutil.which("gimp-3.0")), ""
    with open(CACHE / "gimp3-trixie.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (CHROOT / GUI_MARKER).exists():
            log(f"installing {', '.join(GUI_PACKAGES)} in the GIMP chroot (about 30 s)")
            try:
                _apt_install(CHROOT, GUI_PACKAGES)
            except (subprocess.CalledProcessError, OSError) as e:
                err = getattr(e, "stderr", b"") or b""
                return None, f"could not add the window tools to the GIMP chroot: {e} {err[-500:]!r}"
            (CHROOT / GUI_MARKER).write_text("ok\n")
    return Gimp("chroot", "/usr/bin/gimp-3.0", CHROOT), ""


def meaningful(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if line.strip() and not any(n in line for n in NOISE))


def gimp_or_skip(find, what: str) -> Gimp:
    """The GIMP `find` gives (find_gimp or find_gui_gimp), else a skip; under CI (FAT_REQUIRE_GIMP=1) a failure."""
    import pytest

    found, reason = find()
    if found is None:
        if os.environ.get("FAT_REQUIRE_GIMP") == "1":
            pytest.fail(f"{what} is required here (FAT_REQUIRE_GIMP=1) but unavailable: {reason}")
        pytest.skip(reason)
    return found
