/*
 * The one glibc-only symbol that Debian's libseccomp.a needs when it is
 * linked into a musl binary (scripts/build-oci-musl). Debian builds
 * libseccomp with _FORTIFY_SOURCE, so its text export of a filter
 * (seccomp_export_pfc, linked in but never called by bulkhead) calls
 * glibc's __fprintf_chk; musl has no _chk functions. This forwards to
 * vfprintf without the %n check: libseccomp's formats are literals.
 * Built freestanding: only the compiler's own stdarg.h, no C library headers.
 */
#include <stdarg.h>

struct _IO_FILE; /* musl's FILE */
int vfprintf(struct _IO_FILE *stream, const char *format, va_list ap);

int __fprintf_chk(struct _IO_FILE *stream, int flag, const char *format, ...)
{
	va_list ap;
	int written;

	(void)flag;
	va_start(ap, format);
	written = vfprintf(stream, format, ap);
	va_end(ap);
	return written;
}
