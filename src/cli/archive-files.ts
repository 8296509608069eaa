// The CLI's side of an archive file: staging it on an agent (read where it lies when the agent shares this host,
// else streamed), and making a written archive's rename durable.
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentClient } from '../api/agent-client.ts';
import type { StagedArchive } from '../api/types.ts';

/**
 * Stages an archive on the agent. On the agent's own host the agent reads the file where it lies (zstd reads it
 * directly: no TLS, no copy through this process): this process holds it open, with a token the agent issued in
 * an unlinked file beside it as proof (host/archive-target.ts). Elsewhere, or with an agent that cannot, it streams.
 */
export async function stageFile(client: AgentClient, file: string): Promise<StagedArchive> {
  const token = await client.checkpointToken().catch(() => undefined);
  if (token) {
    const tokenPath = join(tmpdir(), `.ferry-token-${randomBytes(8).toString('hex')}`);
    let archive: FileHandle | undefined;
    let proof: FileHandle | undefined;
    try {
      archive = await open(file, 'r');
      proof = await open(tokenPath, 'wx+', 0o600);
      await proof.write(token, 0);
      await rm(tokenPath, { force: true });
    } catch {
      // no token file here (a read-only temporary directory, say): streamed
      await proof?.close().catch(() => {});
      await archive?.close().catch(() => {});
      await rm(tokenPath, { force: true });
      proof = undefined;
    }
    if (archive && proof) {
      try {
        const staged = await client.stageLocalArchive({
          pid: process.pid,
          fd: archive.fd,
          tokenFd: proof.fd,
          token,
        });
        if (staged) return staged;
      } finally {
        await proof.close().catch(() => {});
        await archive.close().catch(() => {});
      }
    }
  }
  return client.stageArchive(createReadStream(file, { highWaterMark: 1 << 20 }));
}

/** The rename is durable only once the directory is. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
