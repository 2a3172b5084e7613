/* A virtual PIN-pad reader for the card station: a pcscd reader driver (IFD handler) that
 * forwards everything to vpcd's driver and adds the PC/SC part 10 VERIFY_PIN_DIRECT feature.
 *
 * Why: a PIN typed on a reader's keypad never crosses the host, so clients send
 * SCardControl(VERIFY_PIN_DIRECT) with a PIN_VERIFY_STRUCTURE instead of a VERIFY APDU, and
 * the spy must record (and mask) that structure. vpcd has no keypad; this driver "types" the
 * PIN in P11SPY_PINPAD_PIN into the structure's APDU template, sends the VERIFY to the card
 * through vpcd and answers with the card's status word, as a real PIN-pad reader does.
 *
 * pcscd loads it by the LIBPATH of its reader.conf entry; P11SPY_PINPAD_DRIVER names vpcd's
 * driver. Built by testbed/card_station.py when a station asks for a PIN pad.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <PCSC/ifdhandler.h>

#define CM_IOCTL_GET_FEATURE_REQUEST 0x42000D48UL /* SCARD_CTL_CODE(3400) */
#define FEATURE_VERIFY_PIN_DIRECT 0x06
#define IOCTL_VERIFY_PIN_DIRECT 0x42330006UL /* as CCID: SCARD_CTL_CODE(0x330000 + 6) */
#define VERIFY_HEADER 19                      /* PIN_VERIFY_STRUCTURE before abData */

static void *g_vpcd;

static void *real(const char *name)
{
    if (!g_vpcd) {
        const char *path = getenv("P11SPY_PINPAD_DRIVER");
        g_vpcd = dlopen(path ? path : "libifdvpcd.so", RTLD_NOW | RTLD_LOCAL);
        if (!g_vpcd) {
            fprintf(stderr, "pinpad: %s\n", dlerror());
            return NULL;
        }
    }
    return dlsym(g_vpcd, name);
}

#define FORWARD(name, sig, ...)                                   \
    do {                                                          \
        RESPONSECODE(*f) sig = (RESPONSECODE(*) sig)real(#name);  \
        return f ? f(__VA_ARGS__) : IFD_COMMUNICATION_ERROR;      \
    } while (0)

RESPONSECODE IFDHCreateChannelByName(DWORD Lun, LPSTR DeviceName)
{
    FORWARD(IFDHCreateChannelByName, (DWORD, LPSTR), Lun, DeviceName);
}

RESPONSECODE IFDHCreateChannel(DWORD Lun, DWORD Channel)
{
    FORWARD(IFDHCreateChannel, (DWORD, DWORD), Lun, Channel);
}

RESPONSECODE IFDHCloseChannel(DWORD Lun) { FORWARD(IFDHCloseChannel, (DWORD), Lun); }

RESPONSECODE IFDHGetCapabilities(DWORD Lun, DWORD Tag, PDWORD Length, PUCHAR Value)
{
    FORWARD(IFDHGetCapabilities, (DWORD, DWORD, PDWORD, PUCHAR), Lun, Tag, Length, Value);
}

RESPONSECODE IFDHSetCapabilities(DWORD Lun, DWORD Tag, DWORD Length, PUCHAR Value)
{
    FORWARD(IFDHSetCapabilities, (DWORD, DWORD, DWORD, PUCHAR), Lun, Tag, Length, Value);
}

RESPONSECODE IFDHSetProtocolParameters(DWORD Lun, DWORD Protocol, UCHAR Flags, UCHAR PTS1,
                                       UCHAR PTS2, UCHAR PTS3)
{
    FORWARD(IFDHSetProtocolParameters, (DWORD, DWORD, UCHAR, UCHAR, UCHAR, UCHAR), Lun,
            Protocol, Flags, PTS1, PTS2, PTS3);
}

RESPONSECODE IFDHPowerICC(DWORD Lun, DWORD Action, PUCHAR Atr, PDWORD AtrLength)
{
    FORWARD(IFDHPowerICC, (DWORD, DWORD, PUCHAR, PDWORD), Lun, Action, Atr, AtrLength);
}

RESPONSECODE IFDHTransmitToICC(DWORD Lun, SCARD_IO_HEADER SendPci, PUCHAR TxBuffer,
                               DWORD TxLength, PUCHAR RxBuffer, PDWORD RxLength,
                               PSCARD_IO_HEADER RecvPci)
{
    FORWARD(IFDHTransmitToICC, (DWORD, SCARD_IO_HEADER, PUCHAR, DWORD, PUCHAR, PDWORD,
                                PSCARD_IO_HEADER),
            Lun, SendPci, TxBuffer, TxLength, RxBuffer, RxLength, RecvPci);
}

RESPONSECODE IFDHICCPresence(DWORD Lun) { FORWARD(IFDHICCPresence, (DWORD), Lun); }

/* The keypad: the PIN written into the template as bmFormatString says (position in bytes
 * after the APDU header, ASCII, BCD or binary digits), then the VERIFY sent to the card. */
static RESPONSECODE verify_pin_direct(DWORD Lun, const UCHAR *tx, DWORD txlen, PUCHAR rx,
                                      DWORD rxlen, LPDWORD returned)
{
    const char *pin = getenv("P11SPY_PINPAD_PIN");
    if (!pin || txlen < VERIFY_HEADER + 5) return IFD_COMMUNICATION_ERROR;
    UCHAR apdu[261];
    DWORD n = txlen - VERIFY_HEADER;
    if (n > sizeof apdu) return IFD_COMMUNICATION_ERROR;
    memcpy(apdu, tx + VERIFY_HEADER, n);
    UCHAR format = tx[2];
    size_t pos = 5 + ((format >> 3) & 0x0F) / ((format & 0x80) ? 1 : 8);
    size_t len = strlen(pin);
    for (size_t i = 0; i < len; i++) {
        UCHAR digit = (UCHAR)(pin[i] - '0');
        switch (format & 3) {
        case 1: /* BCD: two digits a byte */
            if (pos + i / 2 >= n) return IFD_COMMUNICATION_ERROR;
            if (i % 2 == 0) apdu[pos + i / 2] = (UCHAR)((digit << 4) | (apdu[pos + i / 2] & 0x0F));
            else apdu[pos + i / 2] = (UCHAR)((apdu[pos + i / 2] & 0xF0) | digit);
            break;
        case 2: /* ASCII */
            if (pos + i >= n) return IFD_COMMUNICATION_ERROR;
            apdu[pos + i] = (UCHAR)pin[i];
            break;
        default: /* binary */
            if (pos + i >= n) return IFD_COMMUNICATION_ERROR;
            apdu[pos + i] = digit;
        }
    }
    SCARD_IO_HEADER pci = {2, 8}, recv = {2, 8}; /* T=1 */
    DWORD got = rxlen;
    RESPONSECODE rc = IFDHTransmitToICC(Lun, pci, apdu, n, rx, &got, &recv);
    *returned = rc == IFD_SUCCESS ? got : 0;
    return rc;
}

RESPONSECODE IFDHControl(DWORD Lun, DWORD dwControlCode, PUCHAR TxBuffer, DWORD TxLength,
                         PUCHAR RxBuffer, DWORD RxLength, LPDWORD pdwBytesReturned)
{
    if (dwControlCode == CM_IOCTL_GET_FEATURE_REQUEST) {
        if (RxLength < 6) return IFD_ERROR_INSUFFICIENT_BUFFER;
        UCHAR tlv[6] = {FEATURE_VERIFY_PIN_DIRECT, 4, (IOCTL_VERIFY_PIN_DIRECT >> 24) & 0xFF,
                        (IOCTL_VERIFY_PIN_DIRECT >> 16) & 0xFF,
                        (IOCTL_VERIFY_PIN_DIRECT >> 8) & 0xFF, IOCTL_VERIFY_PIN_DIRECT & 0xFF};
        memcpy(RxBuffer, tlv, sizeof tlv);
        *pdwBytesReturned = sizeof tlv;
        return IFD_SUCCESS;
    }
    if (dwControlCode == IOCTL_VERIFY_PIN_DIRECT)
        return verify_pin_direct(Lun, TxBuffer, TxLength, RxBuffer, RxLength, pdwBytesReturned);
    FORWARD(IFDHControl, (DWORD, DWORD, PUCHAR, DWORD, PUCHAR, DWORD, LPDWORD), Lun,
            dwControlCode, TxBuffer, TxLength, RxBuffer, RxLength, pdwBytesReturned);
}
