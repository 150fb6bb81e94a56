/** The sysfs directory of block device number `rdev` (a stat's rdev): `/sys/dev/block/MAJOR:MINOR`. */
export function sysBlockDir(rdev: number): string {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff);
  return `/sys/dev/block/${major}:${minor}`;
}
