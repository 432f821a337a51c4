"""Fetch the Apache Kafka broker jars from Maven Central, once, into a cache outside the repository.

Maven resolves ``kafka_2.13`` (the broker), ``kafka-tools`` (perf tests, admin tools) and a log4j2 SLF4J
binding with its transitive dependencies, and the pinned ``maven-dependency-plugin`` copies them into
``<cache>/kafka-<version>/libs``. The copy lands in a temporary folder and is renamed into place, so an
interrupted fetch never leaves a half-filled ``libs`` behind; a lock file serialises concurrent fetches.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from streamcar.errors import ToolingError

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.streamcar</groupId>
  <artifactId>local-kafka</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{kafka}</version>
    </dependency>
    <!-- kafka pulls slf4j-api 1.7 through a transitive path; the log4j2 binding needs 2.x -->
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def cache_root() -> Path:
    """``$STREAMCAR_CACHE_DIR``, else ``$XDG_CACHE_HOME/streamcar``, else ``~/.cache/streamcar``."""
    explicit = os.environ.get("STREAMCAR_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "streamcar"


def pom_text() -> str:
    return _POM.format(kafka=KAFKA_VERSION, slf4j=SLF4J_VERSION, log4j=LOG4J_VERSION)


def jars_dir() -> Path:
    return cache_root() / f"kafka-{KAFKA_VERSION}" / "libs"


def _marker(libs: Path) -> Path:
    return libs / ".complete"


def _pom_digest() -> str:
    return hashlib.sha256((pom_text() + DEPENDENCY_PLUGIN).encode()).hexdigest()


def java_binary() -> str:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java`` or the one on PATH, at least Java 17."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise ToolingError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka: install a JDK "
            "(e.g. 'apt-get install openjdk-17-jre-headless') or set JAVA_HOME"
        )
    try:
        out = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30, check=False).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolingError(f"could not run {candidate} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0" style
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise ToolingError(
                f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, but {candidate} is Java {major}: "
                "install a newer JDK or set JAVA_HOME"
            )
    return candidate


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_fetched() -> bool:
    marker = _marker(jars_dir())
    return marker.exists() and marker.read_text().strip() == _pom_digest()


def ensure_jars(*, quiet: bool = True, announce: Callable[[str], None] | None = None) -> Path:
    """Return the folder of broker jars, fetching them through Maven first if the cache lacks them.

    ``announce`` is told once, just before a (slow) fetch really starts.
    """
    libs = jars_dir()
    if is_fetched():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolingError("Maven is needed once to fetch the Kafka jars: install it (e.g. 'apt-get install maven')")
    with _locked(libs.parent / ".fetch.lock"):
        if is_fetched():  # another process fetched while we waited for the lock
            return libs
        libs.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=libs.parent, prefix=".fetch-") as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_text(pom_text())
            staged = work / "libs"
            cmd = [
                mvn,
                "-B",
                "-f",
                str(work / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={staged}",
                "-DincludeScope=runtime",
            ]
            if quiet:
                cmd.insert(2, "-q")
            if announce is not None:
                announce(f"fetching Kafka {KAFKA_VERSION} through Maven (once) into {libs} ...")
            try:
                result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            except subprocess.TimeoutExpired as exc:
                raise ToolingError("Maven did not finish fetching the Kafka jars within 30 minutes") from exc
            if result.returncode != 0 or not any(staged.glob("kafka_2.13-*.jar")):
                tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-5:])
                raise ToolingError(f"Maven could not fetch Kafka {KAFKA_VERSION}: {tail or 'no output'}")
            if libs.exists():
                shutil.rmtree(libs)
            staged.rename(libs)
        _marker(libs).write_text(_pom_digest())
    return libs
