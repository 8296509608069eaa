// Sends ranges of one migration's image files to the destination, checked end to end: the cold tail, the
// parallel streams of the transfer phase and pre-copy's rounds all go through one sender per migration.
import { join } from 'node:path';
import { FerryError } from '../core/errors.ts';
import { type FileRange, readRange } from '../transport/ranges.ts';
import type { DestinationPeer } from './types.ts';

/** Sends ranges of this migration's image files, zero pages skipped; both sides' CRC-32 must agree. */
export class ImageSender {
  /** Bytes of the ranges sent so far, and the zero pages among them. */
  bytes = 0;
  zeroBytes = 0;
  private readonly peer: DestinationPeer;
  private readonly id: string;
  private readonly dir: string;

  constructor(peer: DestinationPeer, id: string, dir: string) {
    this.peer = peer;
    this.id = id;
    this.dir = dir;
  }

  async send(r: FileRange, onBytes?: (n: number) => void): Promise<void> {
    const { body, meter, zeroBytes } = readRange(join(this.dir, r.file), r, {
      sparse: true,
      ...(onBytes ? { onBytes } : {}),
    });
    const got = await this.peer.sendRange(this.id, r, body, { sparse: true }).catch((err: unknown) => {
      body.destroy();
      throw err;
    });
    if (got.bytes !== meter.bytes || got.crc !== meter.crc >>> 0) {
      throw new FerryError(
        'FERRY_E_TRANSFER_CORRUPT',
        `${r.file} at ${r.offset}: the destination got other bytes than were sent`,
        { phase: 'transfer' },
      );
    }
    this.bytes += r.length;
    this.zeroBytes += zeroBytes();
  }
}
