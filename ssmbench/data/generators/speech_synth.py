"""A synthetic Speech Commands stand-in: spoken words from espeak-ng and flite, in the v0.02 layout.

Each "speaker" is one engine (alternating espeak-ng / flite) with a seeded voice, pitch and rate. Each clip is
the synthesized word resampled to 16 kHz (torchaudio), placed at a seeded offset in a 16000-sample buffer and
mixed with seeded white/pink background noise at an SNR of 10-30 dB, written as 16-bit mono WAV to
`<word>/<speaker>_nohash_0.wav`, with speaker = sha1(seed, index)[:8]. `validation_list.txt` and
`testing_list.txt` follow the official hash rule (`speech.which_set`); `_background_noise_/` holds the noise.
Everything is deterministic for a seed (both engines are deterministic programs). This is synthetic data:
results on it are labelled "synthetic", never "official".
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssmbench.errors import DataError

ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f3", "en-gb+f2", "en-us+m3", "en-029"]
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]
ENGINES = ("espeak-ng", "flite")


def available_engines() -> list[str]:
    return [e for e in ENGINES if shutil.which(e)]


def speaker_settings(seed: int, index: int, engines: list[str]) -> dict:
    """Engine, voice, pitch and rate of speaker `index` (a pure function of seed and index)."""
    rng = np.random.default_rng([seed, index])
    engine = engines[index % len(engines)]
    voices = ESPEAK_VOICES if engine == "espeak-ng" else FLITE_VOICES
    return {"engine": engine, "voice": voices[int(rng.integers(len(voices)))],
            "pitch": int(rng.integers(25, 76)), "rate": float(rng.uniform(0.8, 1.25)),
            "id": hashlib.sha1(f"{seed}:{index}".encode()).hexdigest()[:8]}


def synthesize_word(word: str, spk: dict, workdir: Path) -> np.ndarray:
    """float32 mono waveform at 16 kHz of `word` spoken by `spk`."""
    import soundfile as sf
    import torchaudio.functional as AF

    wav = workdir / "w.wav"
    if spk["engine"] == "espeak-ng":
        cmd = ["espeak-ng", "-v", spk["voice"], "-p", str(spk["pitch"]), "-s", str(int(160 * spk["rate"])),
               "-w", str(wav), word]
    else:
        cmd = ["flite", "-voice", spk["voice"], "--setf", f"duration_stretch={1 / spk['rate']:.3f}",
               "--setf", f"int_f0_target_mean={80 + 2 * spk['pitch']}", "-t", word, "-o", str(wav)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    except (subprocess.SubprocessError, OSError, RuntimeError) as e:
        raise DataError(f"synth-speech: `{' '.join(cmd)}` failed ({type(e).__name__}: {e}); "
                        f"install espeak-ng and flite (apt-get install espeak-ng flite).") from None
    x = torch.from_numpy(audio.mean(axis=1))
    return AF.resample(x, rate, 16000).numpy() if rate != 16000 else x.numpy()


def noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Unit-RMS white or pink (1/f power, shaped in the frequency domain) noise."""
    w = rng.standard_normal(n)
    if kind == "pink":
        f = np.fft.rfftfreq(n)
        spec = np.fft.rfft(w) / np.sqrt(np.maximum(f, 1.0 / n))
        w = np.fft.irfft(spec, n)
    return (w / np.sqrt(np.mean(w ** 2))).astype(np.float32)


def place(word: np.ndarray, rng: np.random.Generator, bg: np.ndarray, snr_db: float, clip: int = 16000) -> np.ndarray:
    """The word at a random offset in a `clip`-sample buffer (trimmed to the centre if longer) plus noise at snr_db."""
    if len(word) > clip:
        start = (len(word) - clip) // 2
        word = word[start:start + clip]
    buf = np.zeros(clip, dtype=np.float32)
    off = int(rng.integers(0, clip - len(word) + 1))
    buf[off:off + len(word)] = word
    peak = max(float(np.abs(buf).max()), 1e-6)
    buf *= 0.5 / peak
    rms = float(np.sqrt(np.mean(word ** 2))) * 0.5 / peak if len(word) else 0.0
    start = int(rng.integers(0, len(bg) - clip + 1))
    buf += bg[start:start + clip] * rms * 10 ** (-snr_db / 20)
    return buf


def write_release(out: Path, words: list[str], n_speakers: int, seed: int, progress=lambda done, total: None) -> dict:
    """Write the Speech Commands layout under `out` (see the module docstring); returns counts and timing.
    `progress(done, total)` is called after every clip."""
    import soundfile as sf

    from ssmbench.data.layout import write_marker
    from ssmbench.data.speech import which_set

    engines = available_engines()
    if not engines:
        raise DataError("synth-speech: neither espeak-ng nor flite is installed; install them "
                        "(apt-get install espeak-ng flite) and run again.")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "_background_noise_").mkdir(exist_ok=True)
    backgrounds = {k: noise(rng, 16000 * 10, k) for k in ("white", "pink")}
    for k, bg in backgrounds.items():
        sf.write(out / "_background_noise_" / f"{k}_noise.wav", (bg * 0.1 * 32767).astype(np.int16), 16000)
    speakers = [speaker_settings(seed, i, engines) for i in range(n_speakers)]
    lists = {"validation": [], "testing": []}
    with tempfile.TemporaryDirectory() as tmp:
        for w, word in enumerate(words):
            (out / word).mkdir(exist_ok=True)
            for s, spk in enumerate(speakers):
                clip_rng = np.random.default_rng([seed, w, int(spk["id"], 16)])
                bg = backgrounds["pink" if clip_rng.random() < 0.5 else "white"]
                audio = place(synthesize_word(word, spk, Path(tmp)), clip_rng, bg, float(clip_rng.uniform(10, 30)))
                name = f"{spk['id']}_nohash_0.wav"
                sf.write(out / word / name, np.clip(np.rint(audio * 32767), -32768, 32767).astype(np.int16), 16000,
                         subtype="PCM_16")
                split = which_set(name)
                if split in lists:
                    lists[split].append(f"{word}/{name}")
                progress(w * n_speakers + s + 1, len(words) * n_speakers)
    for split, rows in lists.items():
        (out / f"{split}_list.txt").write_text("".join(f"{r}\n" for r in sorted(rows)))
    write_marker(out, "synthetic", f"synthetic Speech Commands stand-in ({'+'.join(engines)} voices, noise)",
                 seed=seed, words=words, speakers=n_speakers, engines=engines)
    return {"clips": len(words) * n_speakers, "validation": len(lists["validation"]), "testing": len(lists["testing"]),
            "engines": engines, "seconds": round(time.perf_counter() - t0, 2)}
