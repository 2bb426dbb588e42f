/* isoaudio -- the lab's isochronous OUT check: a player with a countable pattern, and its checker.
 *
 *   isoaudio play [-d /dev/snd/pcmCxDyp] [-s STREAM] [-n FRAMES] [-t TAIL] [-L LINGER_S] [-T TIMEOUT_S]
 *   isoaudio check [-s STREAM] [-n FRAMES] [-w WAIT_S] [-i IDLE_S] [-l MAX_LOST_PACKETS] FILE.wav
 *   isoaudio gen [-s STREAM] [-n FRAMES] > raw        (the pattern as raw S16_LE stereo, for tests)
 *
 * play: plays FRAMES stereo S16_LE frames at 48 kHz through the kernel's PCM interface (no alsa-lib:
 * HW_REFINE / HW_PARAMS / SW_PARAMS / PREPARE / WRITEI_FRAMES / DRAIN on the pcm device node), then
 * TAIL frames of silence (default 9600 = 200 ms: they push the pattern's last frames through QEMU's
 * device buffer and its wav writer's stdio buffer). The whole clip fits in the PCM buffer (snd-usb-audio
 * allows 1 MiB, 262144 frames) and is written before the stream starts (start_threshold = all of it),
 * so the player cannot underrun: whatever is missing or doubled at the device was lost or doubled on
 * the way (host controller, PVUSB, QEMU), not by ALSA.
 * The stream is free-wheeling (stop_threshold = boundary), which Linux 6.1's snd-usb-audio takes as a
 * reason not to use its low-latency playback mode (pcm.c, lowlatency_playback_available). In that mode
 * both the URB completion and the PCM's ack call snd_usb_queue_pending_output_urbs, which fills a URB
 * and submits it outside the endpoint's lock, so two of them can reach the host controller in the
 * other order than their data: seen natively in the lab's dom0 (2 vCPUs), packets 12-17 and 18-23 of
 * a clip swapped, which is the driver's doing, not the transport's. Without it, URBs are refilled and
 * resubmitted from their completion only, in order. (An underrun, which free-wheeling no longer
 * reports, would play silence in the middle of the clip, and the checker fails on that.)
 * After the drain the player keeps the device open for LINGER_S seconds (default 3) before it closes
 * it: closing sets the streaming interface to its zero-bandwidth altsetting, and QEMU's usb-audio then
 * stops handing its buffer to the wav writer and drops what is left in it. That writer takes 44100
 * frames a second (see run-lab) against the device's 48000, so at the end of a 4 s clip played in
 * real time about 0.4 s of it is still in the device's buffer.
 * Prints one line: "isoaudio-play result=ok|... frames= tail= rate= channels= buffer= period= write_s=
 * drain_s= xruns=".
 *
 * The pattern: frame n (0 <= n < 2^21) of stream s (0..15) is
 *   L = 0x8000 | (n & 0x7fff)
 *   R = 0x4000 | ((n >> 15) & 0x3f) << 8 | s << 4 | check(n, s)      (check: 4 bits of a hash)
 * so no frame is silence, every frame says its own index, a stream is told apart from another, and
 * a frame whose bytes were shifted, cut or mixed does not decode (L's top bit, R's top two bits and
 * the check bits must all fit). At 48 kHz full speed one 1 ms isochronous packet is 48 frames.
 *
 * check: reads a wav file as QEMU's wav audiodev writes it (44-byte header, then raw data; the header's
 * sizes are filled in only when QEMU closes the file, so the data is read to the end of the file,
 * whole frames only), and classifies every frame: silence (0, 0), a frame of stream STREAM (index n),
 * a frame of another stream, or garbage. It counts, over the frames of STREAM in file order:
 *   arrived     frames of the stream in the file
 *   unique      distinct indices among them
 *   lost        FRAMES - unique (indices never seen)
 *   repeated    arrived - unique (indices seen more than once)
 *   reordered   steps back to an index not seen before
 *   late        frames that arrived (first) after a higher index had (late_pk: in packets)
 *   jumps       steps where the index is not the previous one + 1 (each loss, repeat or reorder)
 *   inner_silence, inner_other, garbage: silence or other streams' frames between the stream's first
 *               and last frame; garbage anywhere in the file
 *   lost_after_last, silence_after: frames missing after the highest index that arrived, and the
 *               silence that follows the stream's last frame (none: the file may end short of the
 *               player's tail, i.e. the end never reached it)
 * and the same in packets of 48 frames (lost_pk = ceil(lost / 48), ...). With -w it reads the file
 * again every 0.25 s until the stream is complete and the file has not grown for 1 s, or the file has
 * not grown for IDLE_S (default 10) seconds, or WAIT_S seconds have passed.
 * PASS when unique = FRAMES - lost with lost_pk <= MAX_LOST_PACKETS (default 0), and repeated,
 * reordered, inner_silence, inner_other and garbage are all 0, and the frames that did arrive are in
 * order (jumps only where packets are missing). Prints one line "isoaudio-check result=PASS|FAIL ...";
 * exit status 0 on PASS, 1 on FAIL, 2 on a usage or file error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <sound/asound.h>

#define RATE 48000
#define PACKET 48 /* frames in one 1 ms packet at 48 kHz */
#define MAX_FRAMES (1u << 21)

static unsigned check_bits(uint32_t n, unsigned s)
{
	uint32_t h = (n * 2654435761u) ^ (s * 0x9e3779b9u);
	h ^= h >> 15;
	h *= 0x2c1b3c6du;
	h ^= h >> 12;
	return h & 0xf;
}

static void pattern(uint32_t n, unsigned s, int16_t *l, int16_t *r)
{
	*l = (int16_t)(uint16_t)(0x8000 | (n & 0x7fff));
	*r = (int16_t)(uint16_t)(0x4000 | ((n >> 15) & 0x3f) << 8 | (s & 0xf) << 4 | check_bits(n, s));
}

/* decode: 0 silence, 1 pattern (sets *n, *s), -1 garbage */
static int decode(uint16_t l, uint16_t r, uint32_t *n, unsigned *s)
{
	if (l == 0 && r == 0)
		return 0;
	if (!(l & 0x8000) || (r & 0xc000) != 0x4000)
		return -1;
	*n = (l & 0x7fff) | ((uint32_t)(r >> 8) & 0x3f) << 15;
	*s = (r >> 4) & 0xf;
	if ((r & 0xf) != check_bits(*n, *s))
		return -1;
	return 1;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr, "usage: isoaudio play [-d PCM] [-s STREAM] [-n FRAMES] [-t TAIL] [-L LINGER_S] [-T TIMEOUT_S]\n"
			"       isoaudio check [-s STREAM] [-n FRAMES] [-w WAIT_S] [-i IDLE_S] [-l MAX_LOST_PACKETS] FILE.wav\n"
			"       isoaudio gen [-s STREAM] [-n FRAMES]\n");
	exit(2);
}

/* ---------------------------------------------------------------------------------------------- */
/* play */

static struct snd_mask *hw_mask(struct snd_pcm_hw_params *p, int var)
{
	return &p->masks[var - SNDRV_PCM_HW_PARAM_FIRST_MASK];
}
static struct snd_interval *hw_int(struct snd_pcm_hw_params *p, int var)
{
	return &p->intervals[var - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
}
static void hw_any(struct snd_pcm_hw_params *p)
{
	memset(p, 0, sizeof(*p));
	for (int i = 0; i <= SNDRV_PCM_HW_PARAM_LAST_MASK - SNDRV_PCM_HW_PARAM_FIRST_MASK; i++)
		memset(p->masks[i].bits, 0xff, sizeof(p->masks[i].bits));
	for (int i = 0; i <= SNDRV_PCM_HW_PARAM_LAST_INTERVAL - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL; i++)
		p->intervals[i].max = ~0u;
	p->rmask = ~0u;
	p->info = ~0u;
}
static void hw_set_mask(struct snd_pcm_hw_params *p, int var, unsigned val)
{
	struct snd_mask *m = hw_mask(p, var);
	memset(m->bits, 0, sizeof(m->bits));
	m->bits[val >> 5] = 1u << (val & 31);
}
static void hw_set_range(struct snd_pcm_hw_params *p, int var, unsigned min, unsigned max)
{
	struct snd_interval *i = hw_int(p, var);
	i->min = min;
	i->max = max;
	i->openmin = i->openmax = 0;
	i->integer = 1;
}
static unsigned hw_get(struct snd_pcm_hw_params *p, int var)
{
	return hw_int(p, var)->min;
}

static volatile sig_atomic_t timed_out;
static void on_alarm(int sig)
{
	(void)sig;
	timed_out = 1;
}

static int do_play(const char *dev, unsigned stream, unsigned frames, unsigned tail, unsigned linger, unsigned timeout)
{
	struct snd_pcm_hw_params hw;
	struct snd_pcm_sw_params sw;
	struct snd_xferi x;
	unsigned total = frames + tail, done = 0, xruns = 0;
	int16_t *buf;
	double t0, t1, t2;
	int fd, attempt;
	char allowed[160];

	buf = calloc(total, 4);
	if (!buf) {
		printf("isoaudio-play result=no-memory\n");
		return 1;
	}
	for (unsigned n = 0; n < frames; n++)
		pattern(n, stream, &buf[2 * n], &buf[2 * n + 1]);

	fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("isoaudio-play result=open-failed dev=%s errno=%d (%s)\n", dev, errno, strerror(errno));
		return 1;
	}
	/* what the driver allows, for the record (and for a failure's explanation) */
	hw_any(&hw);
	hw_set_mask(&hw, SNDRV_PCM_HW_PARAM_ACCESS, SNDRV_PCM_ACCESS_RW_INTERLEAVED);
	hw_set_mask(&hw, SNDRV_PCM_HW_PARAM_FORMAT, SNDRV_PCM_FORMAT_S16_LE);
	if (ioctl(fd, SNDRV_PCM_IOCTL_HW_REFINE, &hw) < 0) {
		printf("isoaudio-play result=hw-refine-failed errno=%d (%s)\n", errno, strerror(errno));
		return 1;
	}
	snprintf(allowed, sizeof(allowed), "rate=%u-%u,channels=%u-%u,buffer=%u-%u,period=%u-%u,periods=%u-%u",
		 hw_int(&hw, SNDRV_PCM_HW_PARAM_RATE)->min, hw_int(&hw, SNDRV_PCM_HW_PARAM_RATE)->max,
		 hw_int(&hw, SNDRV_PCM_HW_PARAM_CHANNELS)->min, hw_int(&hw, SNDRV_PCM_HW_PARAM_CHANNELS)->max,
		 hw_int(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE)->min, hw_int(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE)->max,
		 hw_int(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE)->min, hw_int(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE)->max,
		 hw_int(&hw, SNDRV_PCM_HW_PARAM_PERIODS)->min, hw_int(&hw, SNDRV_PCM_HW_PARAM_PERIODS)->max);
	/* two tries: 100 ms periods, then any period the driver likes; the buffer must hold the clip */
	for (attempt = 0; attempt < 2; attempt++) {
		hw_any(&hw);
		hw_set_mask(&hw, SNDRV_PCM_HW_PARAM_ACCESS, SNDRV_PCM_ACCESS_RW_INTERLEAVED);
		hw_set_mask(&hw, SNDRV_PCM_HW_PARAM_FORMAT, SNDRV_PCM_FORMAT_S16_LE);
		hw_set_mask(&hw, SNDRV_PCM_HW_PARAM_SUBFORMAT, SNDRV_PCM_SUBFORMAT_STD);
		hw_set_range(&hw, SNDRV_PCM_HW_PARAM_CHANNELS, 2, 2);
		hw_set_range(&hw, SNDRV_PCM_HW_PARAM_RATE, RATE, RATE);
		hw_set_range(&hw, SNDRV_PCM_HW_PARAM_SAMPLE_BITS, 16, 16);
		hw_set_range(&hw, SNDRV_PCM_HW_PARAM_FRAME_BITS, 32, 32);
		hw_set_range(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE, total < 96000 ? total : 96000, ~0u);
		if (attempt == 0)
			hw_set_range(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE, 4800, 4800);
		if (ioctl(fd, SNDRV_PCM_IOCTL_HW_REFINE, &hw) == 0 && ioctl(fd, SNDRV_PCM_IOCTL_HW_PARAMS, &hw) == 0)
			break;
	}
	if (attempt == 2) {
		printf("isoaudio-play result=hw-params-failed errno=%d (%s) frames=%u allowed=%s\n", errno, strerror(errno), total,
		       allowed);
		return 1;
	}
	memset(&sw, 0, sizeof(sw));
	sw.period_step = 1;
	sw.avail_min = hw_get(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE);
	sw.xfer_align = 1;
	sw.start_threshold = total < hw_get(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE) ? total : hw_get(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE);
	sw.stop_threshold = hw_get(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE);
	/* first call: the kernel says its boundary; then silence everything beyond the written data */
	if (ioctl(fd, SNDRV_PCM_IOCTL_SW_PARAMS, &sw) < 0) {
		printf("isoaudio-play result=sw-params-failed errno=%d (%s)\n", errno, strerror(errno));
		return 1;
	}
	sw.silence_threshold = 0;
	sw.silence_size = sw.boundary;
	/* free-wheeling (stop_threshold beyond the buffer): keeps snd-usb-audio out of its low-latency
	   playback mode, see the top of this file */
	sw.stop_threshold = sw.boundary;
	if (ioctl(fd, SNDRV_PCM_IOCTL_SW_PARAMS, &sw) < 0) {
		printf("isoaudio-play result=sw-params-silence-failed errno=%d (%s)\n", errno, strerror(errno));
		return 1;
	}
	if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0) {
		printf("isoaudio-play result=prepare-failed errno=%d (%s)\n", errno, strerror(errno));
		return 1;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm; /* no SA_RESTART: the blocked ioctl returns EINTR */
	sigaction(SIGALRM, &sa, NULL);
	alarm(timeout);
	t0 = now_s();
	while (done < total && !timed_out) {
		x.result = 0;
		x.buf = buf + 2 * done;
		x.frames = total - done;
		if (ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x) < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EPIPE) { /* cannot happen before the start; counted, not hidden */
				xruns++;
				if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0)
					break;
				continue;
			}
			printf("isoaudio-play result=write-failed errno=%d (%s) written=%u\n", errno, strerror(errno), done);
			return 1;
		}
		done += x.result;
	}
	t1 = now_s();
	if (!timed_out && ioctl(fd, SNDRV_PCM_IOCTL_DRAIN) < 0 && errno != EINTR) {
		printf("isoaudio-play result=drain-failed errno=%d (%s)\n", errno, strerror(errno));
		return 1;
	}
	t2 = now_s();
	alarm(0);
	if (!timed_out)
		sleep(linger); /* the device open, its interface streaming: QEMU empties its buffer */
	printf("isoaudio-play result=%s stream=%u frames=%u tail=%u written=%u rate=%u channels=%u buffer=%u period=%u "
	       "write_s=%.2f drain_s=%.2f linger_s=%u xruns=%u freewheel=yes allowed=%s\n",
	       timed_out ? "timeout" : xruns ? "xrun" : "ok", stream, frames, tail, done, hw_get(&hw, SNDRV_PCM_HW_PARAM_RATE),
	       hw_get(&hw, SNDRV_PCM_HW_PARAM_CHANNELS), hw_get(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE),
	       hw_get(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE), t1 - t0, t2 - t1, linger, xruns, allowed);
	fflush(stdout);
	close(fd);
	return timed_out || xruns ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* check */

struct result {
	long long file_frames, silence, other, garbage;
	long long arrived, unique, lost, repeated, reordered, jumps, inner_silence, inner_other;
	long long first_pos, last_pos, first_index, last_index, lost_runs, max_index, silence_after, late;
	unsigned header_rate, header_channels, header_bits;
	char first_jump[96];
};

/* the data offset of a wav file: the "data" chunk's body, or 44 if the header is QEMU's fixed one */
static long wav_data_offset(const unsigned char *h, size_t len, struct result *r)
{
	size_t off = 12;
	if (len < 12 || memcmp(h, "RIFF", 4) || memcmp(h + 8, "WAVE", 4))
		return -1;
	while (off + 8 <= len) {
		uint32_t sz = h[off + 4] | h[off + 5] << 8 | h[off + 6] << 16 | (uint32_t)h[off + 7] << 24;
		if (!memcmp(h + off, "fmt ", 4) && off + 24 <= len) {
			r->header_channels = h[off + 10] | h[off + 11] << 8;
			r->header_rate = h[off + 12] | h[off + 13] << 8 | h[off + 14] << 16 | (uint32_t)h[off + 15] << 24;
			r->header_bits = h[off + 22] | h[off + 23] << 8;
		}
		if (!memcmp(h + off, "data", 4))
			return off + 8;
		off += 8 + sz + (sz & 1);
	}
	return -1;
}

static int analyse(const char *path, unsigned stream, unsigned frames, struct result *r, unsigned char *seen)
{
	unsigned char hdr[512];
	unsigned char chunk[65536];
	long off;
	size_t got, keep = 0;
	long long pos = 0, prev = -1;
	FILE *f = fopen(path, "rb");

	memset(r, 0, sizeof(*r));
	r->first_pos = r->last_pos = r->first_index = r->last_index = r->max_index = -1;
	if (!f)
		return -1;
	got = fread(hdr, 1, sizeof(hdr), f);
	off = wav_data_offset(hdr, got, r);
	if (off < 0 || fseek(f, off, SEEK_SET)) {
		fclose(f);
		return -2;
	}
	memset(seen, 0, frames);
	/* the counters of silence / other streams since the stream's last frame: they are "inner" only
	   if another frame of the stream follows */
	long long pend_sil = 0, pend_other = 0;
	int after = 0; /* counting the silence right after the stream's latest frame */
	while ((got = fread(chunk + keep, 1, sizeof(chunk) - keep, f)) > 0) {
		size_t len = keep + got, i;
		for (i = 0; i + 4 <= len; i += 4, pos++) {
			uint16_t l = chunk[i] | chunk[i + 1] << 8, rr = chunk[i + 2] | chunk[i + 3] << 8;
			uint32_t n;
			unsigned s;
			int k = decode(l, rr, &n, &s);
			if (k == 0) {
				r->silence++;
				if (after)
					r->silence_after++;
				if (r->arrived)
					pend_sil++;
				continue;
			}
			if (k < 0) {
				r->garbage++;
				after = 0;
				continue;
			}
			if (s != stream || n >= frames) {
				/* another stream (or beyond this one's length: counted as another's) */
				r->other++;
				after = 0;
				if (r->arrived)
					pend_other++;
				continue;
			}
			if (!r->arrived) {
				r->first_pos = pos;
				r->first_index = n;
			}
			r->arrived++;
			after = 1;
			r->silence_after = 0;
			r->inner_silence += pend_sil;
			r->inner_other += pend_other;
			pend_sil = pend_other = 0;
			if (prev >= 0 && n != prev + 1) {
				r->jumps++;
				if (!r->first_jump[0])
					snprintf(r->first_jump, sizeof(r->first_jump), "%lld->%u@frame%lld", prev, n, pos);
				if (n < prev + 1 && !seen[n])
					r->reordered++;
				if (n > prev + 1)
					r->lost_runs++;
			}
			if ((long long)n < r->max_index && !seen[n])
				r->late++; /* arrived after a later frame of the stream */
			if (seen[n] < 255)
				seen[n]++;
			if (seen[n] == 1)
				r->unique++;
			prev = n;
			if ((long long)n > r->max_index)
				r->max_index = n;
			r->last_pos = pos;
			r->last_index = n;
		}
		keep = len - i;
		memmove(chunk, chunk + i, keep);
	}
	fclose(f);
	r->file_frames = pos;
	r->lost = frames - r->unique;
	r->repeated = r->arrived - r->unique;
	return 0;
}

static int do_check(const char *path, unsigned stream, unsigned frames, double wait, double idle, long max_lost_pk)
{
	struct result r;
	unsigned char *seen = malloc(frames ? frames : 1);
	double t0 = now_s(), last_growth = t0, complete_since = -1;
	off_t last_size = -1;
	int rc;
	struct stat st;

	for (;;) {
		if (stat(path, &st) == 0 && st.st_size != last_size) {
			last_size = st.st_size;
			last_growth = now_s();
		}
		rc = analyse(path, stream, frames, &r, seen);
		if (wait <= 0)
			break;
		double t = now_s();
		if (rc == 0 && r.unique == frames) {
			if (complete_since < 0)
				complete_since = t;
			if (t - last_growth >= 1.0 && t - complete_since >= 1.0)
				break;
		}
		if (t - last_growth >= idle || t - t0 >= wait)
			break;
		usleep(250000);
	}
	if (rc == -1) {
		printf("isoaudio-check result=FAIL stream=%u cannot open %s: %s\n", stream, path, strerror(errno));
		return 2;
	}
	if (rc == -2) {
		printf("isoaudio-check result=FAIL stream=%u %s: no RIFF/WAVE data chunk\n", stream, path);
		return 2;
	}
	long long lost_pk = (r.lost + PACKET - 1) / PACKET;
	int pass = r.header_channels == 2 && r.header_bits == 16 && lost_pk <= max_lost_pk && r.repeated == 0 &&
		   r.reordered == 0 && r.late == 0 && r.inner_silence == 0 && r.inner_other == 0 && r.garbage == 0 &&
		   r.jumps == r.lost_runs && r.lost % PACKET == 0;
	printf("isoaudio-check result=%s stream=%u expected=%u expected_pk=%u arrived=%lld arrived_pk=%lld lost=%lld "
	       "lost_pk=%lld repeated=%lld repeated_pk=%lld reordered=%lld late=%lld late_pk=%lld jumps=%lld inner_silence=%lld "
	       "inner_other=%lld "
	       "garbage=%lld first_index=%lld last_index=%lld lost_after_last=%lld silence_after=%lld first_pos=%lld "
	       "file_frames=%lld "
	       "silence=%lld other=%lld "
	       "header=%uHz/%uch/%ubit waited=%.1f first_jump=%s\n",
	       pass ? "PASS" : "FAIL", stream, frames, frames / PACKET, r.arrived, r.arrived / PACKET, r.lost, lost_pk,
	       r.repeated, (r.repeated + PACKET - 1) / PACKET, r.reordered, r.late, (r.late + PACKET - 1) / PACKET, r.jumps,
	       r.inner_silence, r.inner_other,
	       r.garbage, r.first_index, r.last_index, (long long)frames - 1 - r.max_index, r.silence_after, r.first_pos,
	       r.file_frames,
	       r.silence, r.other, r.header_rate,
	       r.header_channels, r.header_bits, now_s() - t0, r.first_jump[0] ? r.first_jump : "none");
	return pass ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/snd/pcmC0D0p";
	unsigned stream = 1, frames = 4 * RATE, tail = 9600, linger = 3, timeout = 120;
	double wait = 0, idle = 10;
	long max_lost = 0;
	int c;

	if (argc < 2)
		usage();
	const char *cmd = argv[1];
	argv++;
	argc--;
	while ((c = getopt(argc, argv, "d:s:n:t:L:T:w:i:l:")) != -1) {
		switch (c) {
		case 'd': dev = optarg; break;
		case 's': stream = strtoul(optarg, NULL, 0) & 0xf; break;
		case 'n': frames = strtoul(optarg, NULL, 0); break;
		case 't': tail = strtoul(optarg, NULL, 0); break;
		case 'L': linger = strtoul(optarg, NULL, 0); break;
		case 'T': timeout = strtoul(optarg, NULL, 0); break;
		case 'w': wait = atof(optarg); break;
		case 'i': idle = atof(optarg); break;
		case 'l': max_lost = strtol(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (frames == 0 || frames > MAX_FRAMES)
		usage();
	if (!strcmp(cmd, "play"))
		return do_play(dev, stream, frames, tail, linger, timeout);
	if (!strcmp(cmd, "check")) {
		if (optind >= argc)
			usage();
		return do_check(argv[optind], stream, frames, wait, idle, max_lost);
	}
	if (!strcmp(cmd, "gen")) {
		for (unsigned n = 0; n < frames; n++) {
			int16_t lr[2];
			pattern(n, stream, &lr[0], &lr[1]);
			fwrite(lr, 4, 1, stdout);
		}
		return 0;
	}
	usage();
	return 2;
}
