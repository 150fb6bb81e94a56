/** A seeded PRNG (mulberry32): the same `--seed` replays the same choices. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A check's own stream for a run seed: the same `--seed` gives each check the same draws, run alone or in a suite. */
export function checkRandom(seed: number, checkId: string): () => number {
  // FNV-1a of the id, mixed into the seed.
  let h = 0x811c9dc5;
  for (let i = 0; i < checkId.length; i++) h = Math.imul(h ^ checkId.charCodeAt(i), 0x01000193) >>> 0;
  return seededRandom((seed ^ h) >>> 0);
}
