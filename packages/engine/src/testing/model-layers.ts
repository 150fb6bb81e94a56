import assert from "node:assert";

// The layers of the store model: which blocks each layer holds data for, so
// the model can say how much pool space each volume head, snapshot and hidden
// layer must hold (sub-extent allocation: 4 KiB per block with data, no more).
//
// This follows the store's documented rules, not its code: a write makes its
// blocks data in the volume's head; whole blocks zeroed or trimmed become zero
// markers (or nothing, in a layer with no parent); a snapshot seals the head
// and gives the volume a new empty one; a clone of a volume seals its head as
// a hidden layer both read through; a hidden layer with no child goes, and one
// with a single child is folded into it (the child's own states win).
//
// After a kill -9 a block written since the last flush may hold any of its
// recent states, so each block holds a set of possible states, and a layer's
// space is a range: the blocks that surely hold data to those that may.

/** Bits of a block's possible states. */
export const Possible = { ABSENT: 1, DATA: 2, ZERO: 4 } as const;
/** A set of {@link Possible} bits; never 0. */
export type PossibleStates = number;

export class ModelLayer {
  parent: ModelLayer | null;
  children = 0;
  /** Block index to its possible states; a block not here is surely absent. */
  readonly states = new Map<number, PossibleStates>();

  constructor(parent: ModelLayer | null) {
    this.parent = parent;
    if (parent) parent.children++;
  }

  stateOf(block: number): PossibleStates {
    return this.states.get(block) ?? Possible.ABSENT;
  }

  set(block: number, states: PossibleStates): void {
    assert(states !== 0, `block ${block}: a block must have at least one possible state`);
    if (states === Possible.ABSENT) this.states.delete(block);
    else this.states.set(block, states);
  }

  /** What whole blocks zeroed or trimmed in this layer become. */
  get zeroState(): PossibleStates {
    return this.parent ? Possible.ZERO : Possible.ABSENT;
  }

  /** Blocks that surely hold data, and those that may, in 4 KiB blocks. */
  dataBlocks(): { min: number; max: number } {
    let min = 0;
    let max = 0;
    for (const s of this.states.values()) {
      if (s & Possible.DATA) max++;
      if (s === Possible.DATA) min++;
    }
    return { min, max };
  }
}

/** The tree of layers, with what names each one (a volume's head, a snapshot). */
export class ModelLayers {
  readonly all = new Set<ModelLayer>();

  add(parent: ModelLayer | null): ModelLayer {
    const layer = new ModelLayer(parent);
    this.all.add(layer);
    return layer;
  }

  /** Drops a layer no one names and no layer builds on; returns its parent. */
  dropLeaf(layer: ModelLayer): ModelLayer | null {
    assert.equal(layer.children, 0, "a layer with children cannot be dropped");
    this.all.delete(layer);
    const parent = layer.parent;
    if (parent) parent.children--;
    layer.parent = null;
    return parent;
  }

  /**
   * Removes hidden layers from `start` down: one with no child goes (and its
   * parent is looked at next); one with a single child is folded into it.
   */
  collect(start: ModelLayer | null, named: (layer: ModelLayer) => boolean): void {
    for (let layer = start; layer !== null && this.all.has(layer) && !named(layer); ) {
      if (layer.children === 0) {
        layer = this.dropLeaf(layer);
        continue;
      }
      if (layer.children === 1) this.#fold(layer);
      return;
    }
  }

  #fold(layer: ModelLayer): void {
    const child = [...this.all].find((l) => l.parent === layer);
    assert(child, "a layer with one child has no child");
    for (const [block, below] of layer.states) {
      const own = child.stateOf(block);
      // The child's own state wins; where it may be absent, the folded layer's state shows through.
      if (own & Possible.ABSENT) child.set(block, (own & ~Possible.ABSENT) | below);
    }
    child.parent = layer.parent;
    layer.children = 0;
    layer.parent = null;
    this.all.delete(layer);
  }

  /** Blocks with data in every layer, named or hidden. */
  totalDataBlocks(): { min: number; max: number } {
    let min = 0;
    let max = 0;
    for (const layer of this.all) {
      const d = layer.dataBlocks();
      min += d.min;
      max += d.max;
    }
    return { min, max };
  }
}
