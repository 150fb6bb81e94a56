/**
 * A parser with a bug behind three nested conditions (a magic, an option code
 * and a length), the shape of the bugs the NBD targets hunt: blind random
 * inputs reach it about once in 2^96 tries, a coverage-guided search in a few
 * thousand runs because each condition met is a new block kept in the corpus.
 */
export function plantedParser(input: Buffer): void {
  if (input.length < 16) return;
  if (input.toString("latin1", 0, 8) !== "IHAVEOPT") return;
  const option = input.readUInt32BE(8);
  if (option !== 9) return;
  const length = input.readUInt32BE(12);
  if (length === 7) throw new RangeError("planted bug: option 9 with 7 bytes");
}
