// The CRIU configuration file an agent writes for its containers. runc 1.1 has no flag for most of CRIU's
// options; it hands CRIU the file named by the container's `org.criu.config` annotation (ContainerHost sets it
// on every container it creates or restores), and CRIU reads the file on every dump and restore.

export interface CriuFileOptions {
  /**
   * Files that are open but unlinked while other hard links remain (CRIU --link-remap). CRIU links them back
   * under a temporary name in the same directory for the dump and removes that name at restore. A dump that
   * leaves the process running (a migration's, until the destination confirms) removes the name again at its
   * end, so the source makes it again before the rootfs is sent (host/link-remaps.ts).
   */
  linkRemap: boolean;
  /**
   * Unix datagram sockets connected to a peer outside the container, such as /dev/log (CRIU --ext-unix-sk):
   * restored by connecting to the same path on the destination. Stream sockets to an outside peer still
   * cannot move (CRIU would need the peer's descriptor), and are refused.
   */
  extUnixSk: boolean;
  /**
   * Largest unlinked-and-open ("ghost") file whose content goes into the images (CRIU --ghost-limit); a
   * larger one fails the dump. CRIU's own default is 1 MiB, less than a temporary file a program deletes after
   * opening it usually holds. Its content is read inside the freeze.
   */
  ghostLimitMiB: number;
}

export const CRIU_FILE_DEFAULTS: CriuFileOptions = {
  linkRemap: true,
  extUnixSk: true,
  ghostLimitMiB: 64,
};

/** What the agent found on its host that goes into the file (not configurable: facts, not choices). */
export interface CriuHostOptions {
  /** The host's cgroup mounts when CRIU can take them as its cgroup yard (runtime/cgroup-yard.ts). */
  cgroupYard?: string;
}

/** The file's text: one CRIU long option per line, without its dashes (CRIU's configuration syntax). */
export function criuConfigText(o: Partial<CriuFileOptions> = {}, host: CriuHostOptions = {}): string {
  const opts = { ...CRIU_FILE_DEFAULTS, ...o };
  const lines = [
    '# written by the ferry agent',
    // ferry locks and unlocks container networks itself (network/identity.ts), before and after CRIU runs
    'network-lock skip',
    `ghost-limit ${opts.ghostLimitMiB}M`,
  ];
  if (opts.linkRemap) lines.push('link-remap');
  if (opts.extUnixSk) lines.push('ext-unix-sk');
  // CRIU's configuration syntax ends an option's argument at white space
  if (host.cgroupYard && !/\s/.test(host.cgroupYard)) lines.push(`cgroup-yard ${host.cgroupYard}`);
  return `${lines.join('\n')}\n`;
}
