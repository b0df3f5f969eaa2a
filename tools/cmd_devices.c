/* cirrdata devices: lists the Vulkan devices and which one the GPU path would use. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char devices_help[] =
    "usage: cirrdata devices [--json]\n\n"
    "Lists the Vulkan devices (name, type, vendor, device-local memory) and marks with '*' the one the\n"
    "GPU path would use: CIRRDATA_VK_DEVICE=<index|name substring> if set, else the best of discrete >\n"
    "integrated > CPU (lavapipe). Without Vulkan (no loader, no driver, no device) it says so and exits 0:\n"
    "the CPU path needs none.\n\n"
    "  --json   one JSON object on stdout: {\"available\", \"selected\", \"devices\": [...], \"message\"}\n";

static const char *vendor_name(uint32_t id) {
    switch (id) {
    case 0x10de: return "NVIDIA";
    case 0x1002: return "AMD";
    case 0x8086: return "Intel";
    case 0x13b5: return "ARM";
    case 0x5143: return "Qualcomm";
    case 0x106b: return "Apple";
    case 0x10005: return "Mesa";
    default: return "";
    }
}

int cmd_devices(int argc, char **argv) {
    bool json = false;
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'h') {
            fputs(devices_help, stdout);
            return CLI_OK;
        } else
            return cli_usage_error("devices", "unknown option");
    }
    if (optind < argc) return cli_usage_error("devices", "unexpected argument '%s'", argv[optind]);
    cd_gpu_device_info d[32];
    int n = 0, sel = -1;
    cd_error err;
    cd_error_clear(&err);
    cd_status st = cd_gpu_list_devices(d, 32, &n, &sel, &err);
    if (st != CD_OK && st != CD_ERR_UNSUPPORTED && st != CD_ERR_ARG) return cli_fail_error(&err);
    if (n > 32) n = 32;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "available", json_boolean(n > 0));
        json_object_set_new(o, "selected", sel >= 0 ? json_integer(sel) : json_null());
        json_t *arr = json_array();
        for (int i = 0; i < n; i++) {
            json_t *e = json_object();
            char buf[16];
            json_object_set_new(e, "index", json_integer(d[i].index));
            json_object_set_new(e, "name", json_string(d[i].name));
            json_object_set_new(e, "type", json_string(cd_gpu_device_type_name(d[i].type)));
            snprintf(buf, sizeof buf, "0x%04x", d[i].vendor_id);
            json_object_set_new(e, "vendor_id", json_string(buf));
            json_object_set_new(e, "vendor", json_string(vendor_name(d[i].vendor_id)));
            snprintf(buf, sizeof buf, "0x%04x", d[i].device_id);
            json_object_set_new(e, "device_id", json_string(buf));
            snprintf(buf, sizeof buf, "%u.%u.%u", d[i].api_version >> 22, (d[i].api_version >> 12) & 0x3ff,
                     d[i].api_version & 0xfff);
            json_object_set_new(e, "api_version", json_string(buf));
            json_object_set_new(e, "driver_version", json_integer(d[i].driver_version));
            json_object_set_new(e, "device_local_bytes", json_integer((json_int_t)d[i].device_local_bytes));
            json_object_set_new(e, "host_visible_device_local", json_boolean(d[i].host_visible_device_local));
            json_object_set_new(e, "compute", json_boolean(d[i].compute));
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "devices", arr);
        json_object_set_new(o, "message", st == CD_OK ? json_null() : json_string(err.message));
        cli_json_print(o);
        return st == CD_ERR_ARG ? CLI_FAIL : CLI_OK;
    }
    if (n == 0) {
        printf("No Vulkan device: %s\nThe CPU path works without one.\n", err.message);
        return CLI_OK;
    }
    printf("   # %-40s %-10s %-8s %10s  %s\n", "name", "type", "vendor", "memory", "Vulkan");
    for (int i = 0; i < n; i++) {
        char mem[32];
        snprintf(mem, sizeof mem, "%.1f GiB", (double)d[i].device_local_bytes / (1024.0 * 1024.0 * 1024.0));
        const char *v = vendor_name(d[i].vendor_id);
        char vbuf[16];
        if (!*v) snprintf(vbuf, sizeof vbuf, "0x%04x", d[i].vendor_id);
        printf(" %c %d %-40.40s %-10s %-8s %10s  %u.%u.%u%s\n", i == sel ? '*' : ' ', d[i].index, d[i].name,
               cd_gpu_device_type_name(d[i].type), *v ? v : vbuf, mem, d[i].api_version >> 22,
               (d[i].api_version >> 12) & 0x3ff, d[i].api_version & 0xfff, d[i].compute ? "" : "  (no compute queue)");
    }
    if (st == CD_ERR_ARG) {
        fprintf(stderr, "cirrdata: %s\n", err.message);
        return CLI_FAIL;
    }
    printf("\n* the device the GPU path would use (CIRRDATA_VK_DEVICE=<index|name> picks another)\n");
    return CLI_OK;
}
