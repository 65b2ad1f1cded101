"""A deterministic set of non-speech clips for scoring voice-activity detectors (issue 12, "No speech").

:func:`nonspeech_clips` synthesises clips of eleven kinds, none holding a
voice: pure and harmonic tones (sine, square, sawtooth, triangle, with and
without vibrato), chords, sweeps, white/pink/brown noise (steady or
amplitude-modulated at a syllable-like 2-8 Hz), clicks (impulse trains and
random taps), mains hum (50/60 Hz with harmonics and buzz), synthetic music
(melodies of harmonic notes with envelopes, with or without drums) and
near-silence (a low noise floor, sometimes with a click).  Every clip's
parameters come from ``numpy.random.default_rng((seed, index))``, so the
set is the same on every machine; another ``seed`` gives a held-out set of
the same kinds.  Levels are drawn so that the loudest 25 ms frame is above
the engine's -60 dBFS silence limit: these clips reach the detector rather
than being refused as silent.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["KINDS", "SR", "nonspeech_clips"]

#: Sample rate of the clips in Hz.
SR = 16_000

_NOTE_RATIOS = (1.0, 1.122, 1.26, 1.335, 1.498, 1.682, 1.888, 2.0)  # a major scale, equal temperament


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _periodic(shape: str, phase: np.ndarray) -> np.ndarray:
    """Waveform of a phase in cycles: sine, square, sawtooth or triangle, amplitude 1."""
    frac = phase % 1.0
    if shape == "sine":
        return np.sin(2 * np.pi * phase)
    if shape == "square":
        return np.where(frac < 0.5, 1.0, -1.0)
    if shape == "sawtooth":
        return 2.0 * frac - 1.0
    return 1.0 - 4.0 * np.abs(frac - 0.5)  # triangle


def _harmonic(f0: np.ndarray | float, n: int, rng: np.random.Generator, partials: int = 8) -> np.ndarray:
    """A harmonic tone with a random spectral roll-off, f0 per sample or constant (Hz)."""
    phase = np.cumsum(np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))) / SR
    rolloff = rng.uniform(0.5, 2.0)
    out = np.zeros(n)
    for k in range(1, partials + 1):
        alias = np.asarray(f0) * k < SR / 2 - 200
        out += np.where(alias, np.sin(2 * np.pi * k * phase + rng.uniform(0, 2 * np.pi)), 0.0) / k**rolloff
    return out


def _envelope(n: int, rng: np.random.Generator) -> np.ndarray:
    """Attack-decay-sustain-release envelope of one note."""
    attack, decay = max(1, int(rng.uniform(0.005, 0.05) * SR)), max(1, int(rng.uniform(0.05, 0.3) * SR))
    sustain, release = rng.uniform(0.3, 0.9), max(1, int(rng.uniform(0.02, 0.2) * SR))
    env = np.full(n, sustain)
    env[: min(n, attack)] = np.linspace(0, 1, attack)[:n]
    d = slice(attack, min(n, attack + decay))
    env[d] = np.linspace(1, sustain, decay)[: env[d].size]
    env[max(0, n - release) :] *= np.linspace(1, 0, min(n, release))
    return env


def _colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent: 0 white, 1 pink, 2 brown."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    spectrum /= f ** (exponent / 2)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _tone(n: int, rng: np.random.Generator) -> np.ndarray:
    shape = ("sine", "square", "sawtooth", "triangle")[int(rng.integers(4))]
    f0 = float(np.exp(rng.uniform(np.log(80.0), np.log(4000.0))))
    if rng.random() < 0.4:  # vibrato, as a sung or bowed note: 4-7 Hz, 1-3 %
        f = f0 * (1 + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(4, 7) * _t(n)))
    else:
        f = np.full(n, f0)
    return _periodic(shape, np.cumsum(f) / SR)


def _chord(n: int, rng: np.random.Generator) -> np.ndarray:
    root = float(np.exp(rng.uniform(np.log(110.0), np.log(880.0))))
    notes = rng.choice(len(_NOTE_RATIOS), size=int(rng.integers(3, 5)), replace=False)
    return sum(_harmonic(root * _NOTE_RATIOS[i], n, rng, partials=int(rng.integers(1, 8))) for i in notes)


def _sweep(n: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = float(rng.uniform(50, 500)), float(rng.uniform(2000, 7800))
    if rng.random() < 0.5:
        lo, hi = hi, lo
    t = _t(n)
    duration = n / SR
    if rng.random() < 0.5:  # linear
        f = lo + (hi - lo) * t / duration
    else:  # exponential
        f = lo * (hi / lo) ** (t / duration)
    return _periodic(("sine", "square")[int(rng.random() < 0.3)], np.cumsum(f) / SR)


def _noise(exponent: float) -> Callable[[int, np.random.Generator], np.ndarray]:
    def make(n: int, rng: np.random.Generator) -> np.ndarray:
        x = _colored_noise(n, rng, exponent)
        if rng.random() < 0.5:  # amplitude-modulated at a syllable-like rate
            x *= 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2, 8) * _t(n) + rng.uniform(0, 2 * np.pi))
        return x

    return make


def _clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    x = 0.002 * rng.standard_normal(n)
    if rng.random() < 0.5:  # an impulse train (metronome, ticking clock)
        period = int(rng.uniform(0.05, 1.0) * SR)
        positions = np.arange(int(rng.integers(0, period)), n, period)
    else:  # random taps (keyboard, mouse)
        positions = np.sort(rng.integers(0, n, size=int(rng.integers(3, 40))))
    decay = np.exp(-np.arange(int(0.004 * SR)) / (0.0007 * SR))
    for p in positions:
        burst = decay * rng.standard_normal(decay.size) * rng.uniform(0.3, 1.0)
        x[p : p + burst.size] += burst[: n - p]
    return x


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    mains = (50.0, 60.0)[int(rng.integers(2))]
    t = _t(n)
    x = sum(rng.uniform(0.05, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in range(1, 8))
    if rng.random() < 0.5:  # buzz: the rectified, clipped hum of a ground loop
        x = np.clip(np.abs(x) * 3, 0, 1) + 0.02 * rng.standard_normal(n)
    return x


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    beat = int(rng.uniform(0.12, 0.6) * SR)
    root = float(np.exp(rng.uniform(np.log(110.0), np.log(660.0))))
    x = np.zeros(n)
    for start in range(0, n, beat):
        length = min(n - start, int(beat * rng.uniform(0.8, 2.0)))
        f0 = root * _NOTE_RATIOS[int(rng.integers(len(_NOTE_RATIOS)))] * (2.0 if rng.random() < 0.2 else 1.0)
        note = _harmonic(f0, length, rng, partials=int(rng.integers(1, 10)))
        x[start : start + length] += note * _envelope(length, rng)
    if rng.random() < 0.5:  # drums: a kick (decaying low sine) and a hi-hat (noise burst) on the beats
        kick_t = _t(int(0.15 * SR))
        kick = np.sin(2 * np.pi * (60 + 80 * np.exp(-kick_t * 30)) * kick_t) * np.exp(-kick_t * 20)
        hat = rng.standard_normal(int(0.05 * SR)) * np.exp(-_t(int(0.05 * SR)) * 80) * 0.3
        for i, start in enumerate(range(0, n, beat)):
            hit = kick if i % 2 == 0 else hat
            x[start : start + hit.size] += hit[: n - start] * 2
    return x


def _near_silence(n: int, rng: np.random.Generator) -> np.ndarray:
    x = _colored_noise(n, rng, float(rng.uniform(0, 2)))
    x /= np.sqrt(np.mean(x**2))
    if rng.random() < 0.3:  # one click in the quiet room
        p = int(rng.integers(0, n - 100))
        x[p : p + 64] += 20 * rng.standard_normal(64) * np.exp(-np.arange(64) / 10)
    return x


#: Kind name -> ``make(n_samples, rng) -> signal`` (before levelling).
KINDS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "tone": _tone,
    "chord": _chord,
    "sweep": _sweep,
    "white": _noise(0.0),
    "pink": _noise(1.0),
    "brown": _noise(2.0),
    "clicks": _clicks,
    "hum": _hum,
    "music": _music,
    "near-silence": _near_silence,
    "square": lambda n, rng: _periodic("square", np.full(n, float(rng.uniform(60, 1000))).cumsum() / SR),
}


def nonspeech_clips(per_kind: int = 20, *, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Synthesise ``per_kind`` clips of every kind in :data:`KINDS`.

    Parameters
    ----------
    per_kind : int, default 20
        Clips of each kind (20 gives 220 clips).
    seed : int, default 0
        Seed of the whole set; clip ``i`` uses ``default_rng((seed, i))``.

    Returns
    -------
    list of (str, np.ndarray)
        ``(kind, signal)`` pairs, kinds in :data:`KINDS` order; each signal
        shape (n_samples,), float32, 16 kHz, 1-6 s long.  The RMS level is
        -45 to -10 dBFS (near-silence: -58 to -45 dBFS), the peak at most
        0.99.
    """
    clips: list[tuple[str, np.ndarray]] = []
    for k, (kind, make) in enumerate(KINDS.items()):
        for j in range(per_kind):
            rng = np.random.default_rng((seed, k * 10_000 + j))
            n = int(rng.uniform(1.0, 6.0) * SR)
            x = np.asarray(make(n, rng), dtype=np.float64)
            x -= x.mean()
            rms_db = rng.uniform(-58.0, -45.0) if kind == "near-silence" else rng.uniform(-45.0, -10.0)
            x *= 10 ** (rms_db / 20) / max(float(np.sqrt(np.mean(x**2))), 1e-12)
            peak = float(np.max(np.abs(x)))
            if peak > 0.99:
                x *= 0.99 / peak
            clips.append((kind, x.astype(np.float32)))
    return clips
