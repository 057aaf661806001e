/* The command line of `ptss trace`, into struct settings. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
	"usage: ptss trace [options] PROBE... [-- COMMAND [ARG...]]\n"
	"       ptss trace [options] -p PID PROBE...\n"
	"\n"
	"Counts how often each thread enters the given functions, exactly. Where a function\n"
	"allows it, a jump into a trampoline inside the traced process counts each call with\n"
	"no stop (a jump probe); elsewhere a breakpoint stops the thread, and its displaced\n"
	"instruction runs out of line in the thread's own scratch entry (a trap probe).\n"
	"\n"
	"PROBE is [MODULE:]FUNC[+OFF][(TYPE, ...)]: FUNC in the main executable, or in\n"
	"MODULE, a path or a library's short name as mapped (libc, liblzma); FUNC may be a\n"
	"glob (lzma_crc*). +OFF probes the instruction OFF bytes into FUNC. TYPEs format\n"
	"the arguments for --events: int, uint, hex, ptr, str, char, bool (up to 6).\n"
	"\n"
	"  -p PID              attach to a running process and all its threads\n"
	"  -f                  follow forked children and their execs\n"
	"  -o FILE             write the report to FILE (default: stderr)\n"
	"  --format table|json report format (default: table)\n"
	"  --interval SECONDS  print a live summary to stderr every SECONDS\n"
	"  --duration SECONDS  detach after SECONDS\n"
	"  --entry-size BYTES  scratch entry size, a power of two >= 16 (default 64)\n"
	"  --latency           time every call, entry to return: count, min, p50, p99,\n"
	"                      max and a histogram per probe (in the process, by jump\n"
	"                      probes on entries and returns, where sites allow it)\n"
	"  --events            a line per call as it returns: TID FUNC(ARGS) = RET <TIME>\n"
	"                      (JSON lines with --format json); implies --latency; every\n"
	"                      probe then stops the thread at its entry and returns\n"
	"  --no-optimize       trap probes only: every hit stops the thread (to compare)\n"
	"  --no-scratch        map no scratch: every hit stops the process and single-steps\n"
	"                      (slow; to compare, or where nothing may be mapped)\n"
	"  -v, --verbose       say why a probe (or one of its returns) is a trap probe\n"
	"  -q                  no informational messages\n"
	"  -h, --help          this help\n"
	"\n"
	"Ctrl-C or SIGTERM detaches cleanly and prints the report. Messages of ptss are one\n"
	"line each on stderr, prefixed 'ptss:'. A probe whose library is not loaded waits for\n"
	"a dlopen; a probe never armed by the end of the run is an error.\n"
	"\n"
	"Exit status: the command's own when ptss started it, 0 after attaching with -p,\n"
	"unless ptss fails: 2 usage error; 3 probe error (refused, or never armed);\n"
	"4 cannot attach or start; 5 tracing failed, or the report could not be written;\n"
	"6 the process attached with -p was killed by a signal.\n";

static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("ptss: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (try 'ptss trace --help')\n", stderr);
	va_end(ap);
	return PTSS_EXIT_USAGE;
}

static bool parse_seconds(const char *arg, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v > 0) || v > 1e7)
		return false;
	*out = v;
	return true;
}

void settings_default(struct settings *s)
{
	*s = (struct settings){ .format = FORMAT_TABLE, .entry_size = PTSS_ENTRY_SIZE_DEFAULT };
}

int settings_parse(struct settings *s, int argc, char **argv)
{
	enum { OPT_FORMAT = 256, OPT_INTERVAL, OPT_DURATION, OPT_ENTRY_SIZE, OPT_NO_SCRATCH,
	       OPT_NO_OPTIMIZE, OPT_LATENCY, OPT_EVENTS };
	static const struct option longopts[] = {
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "interval", required_argument, NULL, OPT_INTERVAL },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "entry-size", required_argument, NULL, OPT_ENTRY_SIZE },
		{ "no-scratch", no_argument, NULL, OPT_NO_SCRATCH },
		{ "no-optimize", no_argument, NULL, OPT_NO_OPTIMIZE },
		{ "latency", no_argument, NULL, OPT_LATENCY },
		{ "events", no_argument, NULL, OPT_EVENTS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	settings_default(s);
	int c, before = optind = 1;
	opterr = 0;
	/* "+": stop at the first non-option, so that the command's own options stay its own. */
	while ((c = getopt_long(argc, argv, "+p:fo:qvh", longopts, NULL)) != -1) {
		before = optind;
		char *end;
		long v;
		switch (c) {
		case 'p':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v <= 0 || v > INT_MAX)
				return usage_error("-p: not a process id: '%s'", optarg);
			s->pid = (pid_t)v;
			break;
		case 'f': s->follow = true; break;
		case 'o': s->output = optarg; break;
		case 'q': s->quiet = true; break;
		case 'v': s->verbose = true; break;
		case 'h': fputs(usage_text, stdout); return PTSS_EXIT_OK;
		case OPT_FORMAT:
			if (!strcmp(optarg, "table"))
				s->format = FORMAT_TABLE;
			else if (!strcmp(optarg, "json"))
				s->format = FORMAT_JSON;
			else
				return usage_error("--format: '%s' is neither table nor json", optarg);
			break;
		case OPT_INTERVAL:
			if (!parse_seconds(optarg, &s->interval))
				return usage_error("--interval: not a positive number of seconds: '%s'", optarg);
			break;
		case OPT_DURATION:
			if (!parse_seconds(optarg, &s->duration))
				return usage_error("--duration: not a positive number of seconds: '%s'", optarg);
			break;
		case OPT_ENTRY_SIZE:
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v < 16 || v > 4096 || (v & (v - 1)))
				return usage_error("--entry-size: not a power of two from 16 to 4096: '%s'", optarg);
			s->entry_size = (size_t)v;
			break;
		case OPT_NO_SCRATCH: s->no_scratch = true; break;
		case OPT_NO_OPTIMIZE: s->no_optimize = true; break;
		case OPT_LATENCY: s->latency = true; break;
		case OPT_EVENTS: s->events = s->latency = true; break;
		case '?':
		default:
			if (optopt && optopt < 256)
				return usage_error("unknown option or missing argument: -%c", optopt);
			return usage_error("unknown option: '%s'", argv[optind - 1]);
		}
	}
	/* getopt ends at a "--" of its own, and skips it: "ptss trace -- CMD" has no probe. */
	if (optind == before + 1 && before < argc && !strcmp(argv[before], "--"))
		optind--;
	/* PROBE... up to "--", then the command. */
	s->probes = &argv[optind];
	int i = optind;
	while (i < argc && strcmp(argv[i], "--"))
		i++;
	s->nprobes = i - optind;
	if (i < argc) {
		s->command = &argv[i + 1];
		if (!s->command[0])
			return usage_error("no command after '--'");
	}
	if (s->nprobes == 0)
		return usage_error("no probe given%s", s->command ? ": name the functions to count before '--'"
				   : s->pid ? ": name the functions to count after -p PID" : "");
	if (!s->pid && !s->command)
		return usage_error("give -p PID or -- COMMAND");
	if (s->pid && s->command)
		return usage_error("give -p PID or -- COMMAND, not both");
	return -1;
}
