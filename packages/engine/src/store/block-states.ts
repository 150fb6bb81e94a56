/**
 * Per-block state inside one layer's extent, two bits per block. ABSENT means
 * "not in this layer, look further down the chain"; ZERO hides lower layers.
 */
export const BlockState = { ABSENT: 0, DATA: 1, ZERO: 2 } as const;
export type BlockState = (typeof BlockState)[keyof typeof BlockState];

/** Empty states for an extent whose states take `stateBytes` bytes. */
export function newStates(stateBytes: number): Uint8Array {
  return new Uint8Array(stateBytes);
}

export function getState(states: Uint8Array, block: number): BlockState {
  return (((states[block >> 2] as number) >> ((block & 3) << 1)) & 3) as BlockState;
}

/** Sets blocks [from, to) to `state`; true when any of them had another state (the entry must be committed). */
export function setStates(states: Uint8Array, from: number, to: number, state: BlockState): boolean {
  let changed = false;
  for (let b = from; b < to; b++) {
    const i = b >> 2;
    const shift = (b & 3) << 1;
    const before = states[i] as number;
    const after = (before & ~(3 << shift)) | (state << shift);
    if (after !== before) {
      states[i] = after;
      changed = true;
    }
  }
  return changed;
}

/** True when every block in [from, to) has `state`. */
export function allStates(states: Uint8Array, from: number, to: number, state: BlockState): boolean {
  for (let b = from; b < to; b++) if (getState(states, b) !== state) return false;
  return true;
}

/** True when any block holds data (so the extent's physical space is in use). */
export function hasData(states: Uint8Array): boolean {
  const blocks = states.length * 4;
  for (let b = 0; b < blocks; b++) if (getState(states, b) === BlockState.DATA) return true;
  return false;
}

/** True when no block has any state (the entry can be dropped). */
export function isEmpty(states: Uint8Array): boolean {
  for (let i = 0; i < states.length; i++) if (states[i] !== 0) return false;
  return true;
}
