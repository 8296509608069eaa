// Extended attributes of a stream entry (never following a symlink), through @napi-rs/xattr: Node has no xattr
// API, and one native call per attribute costs microseconds where a getfattr/setfattr child per file would
// dominate the time to send a rootfs. POSIX ACLs are the xattrs system.posix_acl_access / _default and travel
// as such (the kernel translates them on both ends).
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { errText, failed, MAX_XATTR_NAME, MAX_XATTR_VALUE, show } from './format.ts';

/** Namespaces a Linux destination can recreate (trusted.* and security.* need root there, as here). */
const CARRIED_PREFIXES = ['user.', 'trusted.', 'security.'];
const CARRIED_NAMES = new Set(['system.posix_acl_access', 'system.posix_acl_default']);

/** Null when an attribute called `name` can travel, else why not. */
export function xattrNameProblem(name: string): string | null {
  if (name.length === 0 || Buffer.byteLength(name) > MAX_XATTR_NAME || name.includes('\0'))
    return 'not a valid attribute name';
  if (CARRIED_NAMES.has(name) || CARRIED_PREFIXES.some((p) => name.startsWith(p) && name.length > p.length))
    return null;
  return 'its namespace cannot be recreated on the destination (carried: user.*, trusted.*, security.*, POSIX ACLs)';
}

/**
 * The attributes of `abs` (not followed if it is a symlink), names sorted; an empty map when it has none, the
 * filesystem keeps none or the entry is gone. An attribute that cannot travel fails here, naming the path (`shown`).
 */
export function readXattrs(abs: string, shown: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let names: string[];
  try {
    names = listAttributesSync(abs);
  } catch (err) {
    // ENOTSUP: a filesystem without xattrs has none to lose; ENOENT: it vanished (the walk moves on)
    if (/not supported|No such file/i.test(errText(err))) return out;
    throw failed(`cannot list the extended attributes of ${show(shown)}: ${errText(err)}`, err);
  }
  for (const name of names.sort()) {
    const problem = xattrNameProblem(name);
    if (problem !== null)
      throw failed(`cannot carry extended attribute ${show(name)} of ${show(shown)}: ${problem}`);
    let value: Buffer | null;
    try {
      value = getAttributeSync(abs, name);
    } catch (err) {
      throw failed(`cannot read extended attribute ${show(name)} of ${show(shown)}: ${errText(err)}`, err);
    }
    if (value === null) continue; // removed meanwhile
    if (value.length > MAX_XATTR_VALUE)
      throw failed(`cannot carry extended attribute ${show(name)} of ${show(shown)}: larger than 64 KiB`);
    out.set(name, value);
  }
  return out;
}

/** Sets every attribute in `attrs` on `abs` (not followed if it is a symlink). */
export function writeXattrs(abs: string, shown: string, attrs: Map<string, Buffer>): void {
  for (const [name, value] of attrs) {
    try {
      setAttributeSync(abs, name, value);
    } catch (err) {
      throw failed(`cannot set extended attribute ${show(name)} on ${show(shown)}: ${errText(err)}`, err);
    }
  }
}
